package socket

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// tokens is a parsed token file: which HELLO token each controller must
// present. A line is "<controller> <token>"; <controller> may end in '*'
// (a prefix) or be "*" (every controller); the most specific entry wins.
// A token written "sha256:<hex>" is compared by its SHA-256, so that the
// file need not hold the secret itself.
type tokens struct {
	exact    map[string]string
	prefixes []tokenPrefix // longest first
	any      string
	hasAny   bool
}

type tokenPrefix struct{ prefix, token string }

// parseTokens reads a token file; errors name the line.
func parseTokens(b []byte) (*tokens, error) {
	t := &tokens{exact: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want <controller> <token>, got %d fields", n, len(f))
		}
		id, tok := f[0], f[1]
		if h, ok := strings.CutPrefix(tok, "sha256:"); ok {
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("line %d: sha256: wants 64 hex digits", n)
			}
		}
		switch {
		case id == "*":
			t.any, t.hasAny = tok, true
		case strings.HasSuffix(id, "*"):
			t.prefixes = append(t.prefixes, tokenPrefix{strings.TrimSuffix(id, "*"), tok})
		default:
			t.exact[id] = tok
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Longest prefix first: the most specific entry wins.
	for i := 1; i < len(t.prefixes); i++ {
		for j := i; j > 0 && len(t.prefixes[j].prefix) > len(t.prefixes[j-1].prefix); j-- {
			t.prefixes[j], t.prefixes[j-1] = t.prefixes[j-1], t.prefixes[j]
		}
	}
	return t, nil
}

// check reports whether token is the one controller id must present.
func (t *tokens) check(id string, token []byte) bool {
	want, ok := t.exact[id]
	if !ok {
		for _, p := range t.prefixes {
			if strings.HasPrefix(id, p.prefix) {
				want, ok = p.token, true
				break
			}
		}
	}
	if !ok {
		want, ok = t.any, t.hasAny
	}
	if !ok {
		return false
	}
	if h, isHash := strings.CutPrefix(want, "sha256:"); isHash {
		sum := sha256.Sum256(token)
		return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(h))) == 1
	}
	return subtle.ConstantTimeCompare([]byte(want), token) == 1
}

// certNames reports whether conn's verified TLS client certificate names
// controller id, as its subject common name or one of its DNS names.
func certNames(conn net.Conn, id string) bool {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return false
	}
	chains := tc.ConnectionState().VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return false
	}
	leaf := chains[0][0]
	return leaf.Subject.CommonName == id || slices.Contains(leaf.DNSNames, id)
}

// watchFile re-reads file with load when it changes (checked every
// interval); a file that does not read or parse keeps what was loaded
// before (what names the contents in the logs). It returns when done is
// closed.
func (s *Server) watchFile(done <-chan struct{}, interval time.Duration, file, what string, load func() error) {
	var mod time.Time
	var size int64
	if fi, err := os.Stat(file); err == nil {
		mod, size = fi.ModTime(), fi.Size() // loaded by New
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		fi, err := os.Stat(file)
		if err != nil {
			s.log.Warn("socket: "+what+" file unreadable, keeping the "+what+"s loaded", "file", file, "err", err)
			continue
		}
		if fi.ModTime().Equal(mod) && fi.Size() == size {
			continue
		}
		mod, size = fi.ModTime(), fi.Size()
		if err := load(); err != nil {
			s.log.Error("socket: "+what+" file refused, keeping the "+what+"s loaded", "err", err)
			continue
		}
		s.log.Info("socket: "+what+" file reloaded", "file", file)
	}
}

func (s *Server) loadTokens() error {
	b, err := os.ReadFile(s.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("socket: devices.tokens: %w", err)
	}
	t, err := parseTokens(b)
	if err != nil {
		return fmt.Errorf("socket: devices.tokens %s: %w", s.cfg.TokenFile, err)
	}
	s.tokens.Store(t)
	return nil
}
