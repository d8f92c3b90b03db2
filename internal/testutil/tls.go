package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throw-away certificate authority of one test: its certificate
// (CertFile, PEM) and the key it signs leaf certificates with.
type CA struct {
	Dir      string
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	serial   int64
}

// KeyPair is a leaf certificate and its key as PEM files.
type KeyPair struct {
	CertFile string
	KeyFile  string
}

// NewCA generates an ECDSA P-256 CA valid for an hour and writes its
// certificate into a test temp dir.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "minuted test CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("CA certificate: %v", err)
	}
	ca := &CA{Dir: tb.TempDir(), cert: cert, key: key, serial: 1}
	ca.CertFile = writePEM(tb, filepath.Join(ca.Dir, "ca.pem"), "CERTIFICATE", der)
	return ca
}

// Issue signs a certificate for name (its CN) valid for server and client
// authentication, for the hosts given (IP addresses or DNS names; none:
// 127.0.0.1 and localhost), and writes it and its key as PEM files.
func (ca *CA) Issue(tb testing.TB, name string, hosts ...string) KeyPair {
	tb.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("key of %s: %v", name, err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("certificate of %s: %v", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatalf("key of %s: %v", name, err)
	}
	return KeyPair{
		CertFile: writePEM(tb, filepath.Join(ca.Dir, name+".pem"), "CERTIFICATE", der),
		KeyFile:  writePEM(tb, filepath.Join(ca.Dir, name+"-key.pem"), "EC PRIVATE KEY", kder),
	}
}

// Pool is a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServerTLS is a server tls.Config presenting kp; with clientCerts it
// requires client certificates signed by this CA.
func (ca *CA) ServerTLS(tb testing.TB, kp KeyPair, clientCerts bool) *tls.Config {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(kp.CertFile, kp.KeyFile)
	if err != nil {
		tb.Fatalf("load %s: %v", kp.CertFile, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCerts {
		c.ClientCAs = ca.Pool()
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

func writePEM(tb testing.TB, path, typ string, der []byte) string {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("write %s: %v", path, err)
	}
	return path
}
