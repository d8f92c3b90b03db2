package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// Spool is a Publisher's outbox on disk: every message is appended to one
// file before Enqueue returns, and the acknowledged prefix is dropped
// (the file truncated to its header once every message is acknowledged,
// rewritten without that prefix when it grows large). A process killed
// with messages not yet in JetStream finds them in the file at its next
// start (OpenSpool) and publishes them again, in order, before anything
// new. A replayed copy of a message JetStream had in fact stored carries
// the same Nats-Msg-Id: the stream's duplicate window drops it, and bill's
// idempotency covers one replayed after the window.
//
// Each message is written with one write(2): it survives a kill -9 of the
// process as soon as Enqueue returns. Surviving a power loss as well needs
// SpoolOptions.Sync (an fsync per message, much slower).
//
// A Spool is not safe for concurrent use; the Publisher calls it under its
// lock. The file is locked (flock) so that a second process cannot use it.
type Spool struct {
	path      string
	f         *os.File
	o         SpoolOptions
	log       *slog.Logger
	size      int64 // bytes in the file, header included
	acked     int64 // bytes of acknowledged records after the header
	recovered []SpoolRecord
	buf       []byte
	broken    error // set when the file could not be repaired after a failed write
}

// SpoolOptions tune a Spool.
type SpoolOptions struct {
	// Sync makes every append and compaction fsync (survives a power loss,
	// not only a process crash). Default off.
	Sync bool
	// CompactAt: once this many bytes at the head of the file are
	// acknowledged while younger messages still wait (so the file is
	// never emptied), the file is rewritten without them. Default 8 MiB.
	CompactAt int64
	// Logger (nil: discard).
	Logger *slog.Logger
}

// SpoolRecord is one message of a spool file.
type SpoolRecord struct {
	Subject, ID string
	Data        []byte
}

// spoolHeader starts every spool file (format version 1).
var spoolHeader = []byte("MDSPOOL1")

const (
	spoolRecHead     = 8        // u32 body length, u32 CRC-32C of the body
	spoolMaxBody     = 64 << 20 // larger than any NATS payload
	spoolTmpExt      = ".tmp"
	defaultCompactAt = 8 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encodedLen is the size of r in a spool file.
func (r SpoolRecord) encodedLen() int64 {
	return int64(spoolRecHead + uvarintLen(len(r.Subject)) + len(r.Subject) + uvarintLen(len(r.ID)) + len(r.ID) + len(r.Data))
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// appendSpoolRecord appends the encoding of one message to dst.
func appendSpoolRecord(dst []byte, subject, id string, data []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, spoolRecHead)...)
	dst = binary.AppendUvarint(dst, uint64(len(subject)))
	dst = append(dst, subject...)
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	dst = append(dst, id...)
	dst = append(dst, data...)
	body := dst[start+spoolRecHead:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, crcTable))
	return dst
}

// errSpoolTail marks the end of the good records of a spool file.
var errSpoolTail = errors.New("truncated or corrupt record")

// DecodeSpool decodes the records of a spool file body (after its header).
// It returns every record up to the first one that is truncated or
// corrupt, the number of bytes they take, and an error saying why it
// stopped early (nil when b holds only whole records). Data of the records
// aliases b.
func DecodeSpool(b []byte) (recs []SpoolRecord, good int, err error) {
	for good < len(b) {
		r, n, err := decodeSpoolRecord(b[good:])
		if err != nil {
			return recs, good, fmt.Errorf("spool record at byte %d: %w", good+len(spoolHeader), err)
		}
		recs = append(recs, r)
		good += n
	}
	return recs, good, nil
}

func decodeSpoolRecord(b []byte) (SpoolRecord, int, error) {
	if len(b) < spoolRecHead {
		return SpoolRecord{}, 0, fmt.Errorf("%w: %d bytes of a record header", errSpoolTail, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if n > spoolMaxBody {
		return SpoolRecord{}, 0, fmt.Errorf("%w: length %d", errSpoolTail, n)
	}
	if uint64(len(b)-spoolRecHead) < uint64(n) {
		return SpoolRecord{}, 0, fmt.Errorf("%w: %d of %d bytes", errSpoolTail, len(b)-spoolRecHead, n)
	}
	body := b[spoolRecHead : spoolRecHead+int(n)]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return SpoolRecord{}, 0, fmt.Errorf("%w: checksum mismatch", errSpoolTail)
	}
	subject, rest, ok := spoolString(body)
	if !ok {
		return SpoolRecord{}, 0, fmt.Errorf("%w: bad subject", errSpoolTail)
	}
	id, rest, ok := spoolString(rest)
	if !ok {
		return SpoolRecord{}, 0, fmt.Errorf("%w: bad message id", errSpoolTail)
	}
	return SpoolRecord{Subject: subject, ID: id, Data: rest}, spoolRecHead + int(n), nil
}

// spoolString reads a uvarint-prefixed non-empty string.
func spoolString(b []byte) (string, []byte, bool) {
	l, k := binary.Uvarint(b)
	if k <= 0 || l == 0 || l > uint64(len(b)-k) {
		return "", nil, false
	}
	return string(b[k : k+int(l)]), b[k+int(l):], true
}

// OpenSpool opens (creating it and its directory if needed) the spool file
// at path and reads the messages a previous process left in it: the
// Publisher given this Spool sends them first. A truncated or corrupt tail
// (a crash in the middle of a write) is logged and cut off; the good
// records before it are kept. A file that is not a spool at all is moved
// aside (path.corrupt) and a new one started. It fails only when the
// file cannot be created, read or locked.
func OpenSpool(path string, o SpoolOptions) (*Spool, error) {
	if o.CompactAt <= 0 {
		o.CompactAt = defaultCompactAt
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{path: path, o: o, log: log.With("component", "spool", "file", path)}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	f, err := openLocked(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("spool: read %s: %w", path, err)
	}
	if len(b) > 0 && !bytes.HasPrefix(b, spoolHeader) && !bytes.HasPrefix(spoolHeader, b) {
		aside := path + ".corrupt"
		s.log.Error("spool file does not start with a spool header; moved aside, its messages are not replayed", "moved_to", aside, "bytes", len(b))
		if err := os.Rename(path, aside); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("spool: move aside unreadable %s: %w", path, err)
		}
		_ = f.Close()
		if f, err = openLocked(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
			return nil, err
		}
		b = nil
	}
	s.f = f
	good := 0
	if len(b) >= len(spoolHeader) {
		var derr error
		s.recovered, good, derr = DecodeSpool(b[len(spoolHeader):])
		if derr != nil {
			s.log.Warn("spool file has a truncated or corrupt tail (crash during a write?); keeping the good messages before it",
				"kept", len(s.recovered), "dropped_bytes", len(b)-len(spoolHeader)-good, "reason", derr)
		}
	}
	s.size = int64(len(spoolHeader) + good)
	if int64(len(b)) != s.size {
		if err := s.truncate(s.size, good == 0); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	if len(s.recovered) > 0 {
		s.log.Info("spool holds messages a previous process did not get into NATS; publishing them first", "messages", len(s.recovered), "bytes", s.size)
	}
	return s, nil
}

// openLocked opens path and takes an exclusive, non-blocking flock on it.
func openLocked(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("spool: %s is in use by another process (two ingest processes for the same node?): %w", path, err)
	}
	return f, nil
}

// truncate cuts the file to size bytes; with header, to nothing and a
// fresh header is written (size must then be the header's length).
func (s *Spool) truncate(size int64, header bool) error {
	var err error
	if header {
		if err = s.f.Truncate(0); err == nil {
			_, err = s.f.Write(spoolHeader)
		}
	} else {
		err = s.f.Truncate(size)
	}
	if err != nil {
		return fmt.Errorf("spool: truncate %s: %w", s.path, err)
	}
	return nil
}

// Path is the spool file.
func (s *Spool) Path() string { return s.path }

// Size is the spool file's size in bytes.
func (s *Spool) Size() int64 { return s.size }

// takeRecovered returns, once, the messages found at open.
func (s *Spool) takeRecovered() []SpoolRecord {
	r := s.recovered
	s.recovered = nil
	return r
}

// Append writes one message at the end of the file and returns its size
// there. On an error nothing of it stays in the file (a partial write is
// cut off) and 0 is returned: the message then lives only in memory.
func (s *Spool) Append(subject, id string, data []byte) (int64, error) {
	if s.broken != nil {
		return 0, s.broken
	}
	s.buf = appendSpoolRecord(s.buf[:0], subject, id, data)
	n, err := s.f.Write(s.buf)
	if err == nil && s.o.Sync {
		err = s.f.Sync()
	}
	if err != nil {
		if n > 0 {
			if terr := s.f.Truncate(s.size); terr != nil {
				s.broken = fmt.Errorf("spool %s: a failed write could not be cut off (%w); spooling stopped", s.path, terr)
				return 0, s.broken
			}
		}
		return 0, fmt.Errorf("spool: append to %s: %w", s.path, err)
	}
	s.size += int64(n)
	if cap(s.buf) > 1<<20 {
		s.buf = nil // do not keep one huge message's buffer
	}
	return int64(n), nil
}

// Ack drops n acknowledged bytes from the head of the spool: the file is
// emptied once nothing is left unacknowledged, and compacted when the
// acknowledged head grows past CompactAt.
func (s *Spool) Ack(n int64) error {
	if n <= 0 || s.broken != nil {
		return nil
	}
	s.acked += n
	body := s.size - int64(len(spoolHeader))
	switch {
	case s.acked >= body:
		if err := s.truncate(int64(len(spoolHeader)), false); err != nil {
			return err
		}
		s.size, s.acked = int64(len(spoolHeader)), 0
	case s.acked >= s.o.CompactAt && s.acked >= body-s.acked:
		return s.compact()
	}
	return nil
}

// compact rewrites the file without its acknowledged head: the tail goes
// into a new file, locked, that then replaces the old one by rename (a
// crash at any point leaves one whole spool file at path).
func (s *Spool) compact() error {
	start := int64(len(spoolHeader)) + s.acked
	tail := make([]byte, s.size-start)
	if _, err := s.f.ReadAt(tail, start); err != nil {
		return fmt.Errorf("spool: compact %s: read: %w", s.path, err)
	}
	tmp := s.path + spoolTmpExt
	f, err := openLocked(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("spool: compact: %w", err)
	}
	_, err = f.Write(append(append([]byte(nil), spoolHeader...), tail...))
	if err == nil && s.o.Sync {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err == nil && s.o.Sync {
		err = syncDir(filepath.Dir(s.path))
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("spool: compact %s: %w", s.path, err)
	}
	_ = s.f.Close()
	s.f = f
	s.size, s.acked = int64(len(spoolHeader)+len(tail)), 0
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close closes the file; an empty spool (every message acknowledged) is
// removed first.
func (s *Spool) Close() error {
	if s.f == nil {
		return nil
	}
	if s.size <= int64(len(spoolHeader)) && s.acked == 0 && len(s.recovered) == 0 {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove the empty spool file", "err", err)
		}
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("spool: close %s: %w", s.path, err)
	}
	return nil
}
