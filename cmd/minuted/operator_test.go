package main

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/minuted/minuted/internal/api"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/testutil"
)

// The operator commands end with the exit codes of the command table: 0 ok
// (and -h), 1 a failure with a message that says what to do, 2 a bad
// command line. The API is the real one on a real ledger.
func TestOperatorExitCodes(t *testing.T) {
	r := testutil.StartRedis(t)
	h, err := api.New(api.Options{Store: ledger.New(r.Client(t), ledger.Options{}), Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	t.Setenv("MINUTED_CONFIG", "")
	t.Setenv("MINUTED_API_URL", srv.URL)
	t.Setenv("MINUTED_ADMIN_TOKEN", "tok")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"project", "set", "acme", "-min", "30"}, 0, ""},
		{[]string{"topup", "acme", "-seconds", "60", "-ref", "R1"}, 0, ""},
		{[]string{"topup", "acme", "-ref", "R1", "-seconds", "60", "-o", "json"}, 0, ""},
		{[]string{"balance", "-h"}, 0, ""},
		{[]string{"balance", "ghost"}, 1, "project ghost does not exist: create it with `minuted project set ghost`"},
		{[]string{"projects", "-api", dead}, 1, "cannot reach the admin API at " + dead},
		{[]string{"topup", "acme", "-seconds", "60"}, 2, "-ref is required"},
		{[]string{"ledger", "acme", "-n", "5000"}, 2, "from 1 to 1000"},
		{[]string{"calls"}, 2, "missing argument"},
		{[]string{"cdrs", "acme", "-timeout", "never"}, 2, "-timeout"},
		{[]string{"alerts", "-api", "localhost:8090"}, 2, "must look like http://127.0.0.1:8090"},
	} {
		var stdout, stderr bytes.Buffer
		code := realMain(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("minuted %q: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
	t.Setenv("MINUTED_ADMIN_TOKEN", "wrong")
	var stderr bytes.Buffer
	if code := realMain([]string{"projects"}, new(bytes.Buffer), &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "the admin token was refused: set MINUTED_ADMIN_TOKEN") {
		t.Errorf("wrong token: exit %d, %s", code, stderr.String())
	}
}
