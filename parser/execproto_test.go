package parser

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func TestExecRequestLayout(t *testing.T) {
	m := &Message{Controller: "ab", Seq: 7, Fence: 9, Received: time.UnixMilli(1234), Attempt: 2, Payload: []byte("hi")}
	b := AppendExecRequest(nil, m)
	want := []byte{0, 0, 0, 31, 2, 'a', 'b'}
	want = binary.BigEndian.AppendUint64(want, 7)
	want = binary.BigEndian.AppendUint64(want, 9)
	want = binary.BigEndian.AppendUint64(want, 1234)
	want = append(want, 0, 2, 'h', 'i')
	if !bytes.Equal(b, want) {
		t.Fatalf("request\n got %v\nwant %v", b, want)
	}
}

func TestReadExecReply(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		status  byte
		body    string
		wantErr bool
	}{
		{"ok", []byte{0, 0, 0, 3, 0, 'o', 'k'}, 0, "ok", false},
		{"skip", []byte{0, 0, 0, 1, 1}, 1, "", false},
		{"permanent", []byte{0, 0, 0, 4, 3, 'b', 'a', 'd'}, 3, "bad", false},
		{"no status", []byte{0, 0, 0, 0}, 0, "", true},
		{"unknown status", []byte{0, 0, 0, 1, 4}, 0, "", true},
		{"too large", []byte{0xff, 0xff, 0xff, 0xff, 0}, 0, "", true},
		{"truncated", []byte{0, 0, 0, 5, 0, 'a'}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body, err := ReadExecReply(bufio.NewReader(bytes.NewReader(tt.in)), 1024)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (st != tt.status || string(body) != tt.body) {
				t.Fatalf("got %d %q, want %d %q", st, body, tt.status, tt.body)
			}
		})
	}
}

func FuzzExecReply(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 0, 'o', 'k'})
	f.Add([]byte{0, 0, 0, 1, 1})
	f.Add([]byte{0, 0, 0, 4, 3, 'b', 'a', 'd', 0, 0, 0, 1, 2})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for i := 0; i < 16; i++ {
			st, body, err := ReadExecReply(r, 4096)
			if err != nil {
				return
			}
			if st > ExecPermanent || len(body) > 4096 {
				t.Fatalf("accepted status %d with %d bytes", st, len(body))
			}
		}
	})
}
