package socket

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

type failOpenStore struct{ *lease.Memory }

func (failOpenStore) Open(context.Context, string, bool) (lease.Session, error) {
	return lease.Session{}, errors.New("redis down")
}

// TestRefusedSessionGetsItsError: a session refused after it was
// registered (the lease store cannot open it) is told why: a device told
// "busy" retries later, one told "taken over" stops; one that sees only
// the connection close can tell neither.
func TestRefusedSessionGetsItsError(t *testing.T) {
	h := start(t, Config{}, failOpenStore{lease.NewMemory()})
	got := map[string]int{}
	const n = 200
	for range n {
		conn, err := net.Dial("tcp", h.s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(egp.AppendHello(nil, egp.Hello{Version: egp.Version, ID: "ctl-x"}))
		conn.SetReadDeadline(time.Now().Add(timeout))
		fh, body, err := egp.NewReader(conn, egp.DefaultMaxFrame, 4096).ReadFrame()
		switch {
		case err != nil:
			got["no frame: "+err.Error()]++
		case fh.Type == egp.TypeError:
			code, _, _ := egp.ParseError(body)
			got["ERROR "+code.String()]++
		default:
			got[fh.Type.String()]++
		}
		conn.Close()
	}
	if got["ERROR "+egp.CodeBusy.String()] != n {
		t.Fatalf("answers to %d refused sessions: %v; want ERROR busy for each", n, got)
	}
}
