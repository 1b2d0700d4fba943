package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/edgegate/edgegate/egp"
)

// defaultTokens is the token file the package's configuration names.
const defaultTokens = "/etc/edgegate/devices.tokens"

// devicesCommand enrols devices: a device's HELLO token is made here and
// shown once; the token file keeps only its SHA-256, so that reading the
// file (a backup, a support bundle) gives no device's secret away.
func devicesCommand(stdout, stderr io.Writer) *cli.Command {
	tokensFlag := func() *cli.StringFlag {
		return &cli.StringFlag{Name: "tokens", Usage: "the token file (devices.tokens)", EnvVars: []string{envName("devices.tokens")}, Value: defaultTokens, TakesFile: true}
	}
	return &cli.Command{
		Name:  "devices",
		Usage: "enrol devices: their HELLO tokens in the token file (devices.tokens)",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "enrol a device: print a new token for it, once, and add its hash to the token file",
				ArgsUsage: "<controller-id>",
				Flags:     []cli.Flag{tokensFlag(), &cli.BoolFlag{Name: "replace", Usage: "give a device already enrolled a new token"}},
				Action: func(c *cli.Context) error {
					id, o, err := deviceArgs(c, true)
					if err != nil {
						return err
					}
					token, err := addDevice(o.tokens, id, o.replace, rand.Reader)
					if err != nil {
						return err
					}
					fmt.Fprintln(stdout, token)
					fmt.Fprintf(stderr, "edgegate: %s enrolled in %s (a running appliance reads it within seconds).\n"+
						"The device sends the token above in its HELLO; it is not stored and cannot be shown again.\n", id, o.tokens)
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a device's token from the token file: the device is refused at its next HELLO",
				ArgsUsage: "<controller-id>",
				Flags:     []cli.Flag{tokensFlag()},
				Action: func(c *cli.Context) error {
					id, o, err := deviceArgs(c, false)
					if err != nil {
						return err
					}
					return removeDevice(o.tokens, id)
				},
			},
			{
				Name:  "list",
				Usage: "list the token file's entries (controllers, prefixes, and how their tokens are kept), never the tokens",
				Flags: []cli.Flag{tokensFlag()},
				Action: func(c *cli.Context) error {
					entries, err := readTokenEntries(c.String("tokens"))
					if err != nil {
						return err
					}
					for _, e := range entries {
						fmt.Fprintf(stdout, "%s\t%s\n", e.id, e.kind)
					}
					return nil
				},
			},
		},
	}
}

type deviceOpts struct {
	tokens  string
	replace bool
}

// deviceArgs returns the controller ID argument and the options, which
// may also follow the ID (`devices add pump-1 --tokens FILE`).
func deviceArgs(c *cli.Context, add bool) (string, deviceOpts, error) {
	o := deviceOpts{tokens: c.String("tokens")}
	if add {
		o.replace = c.Bool("replace")
	}
	if c.NArg() == 0 {
		return "", o, errors.New("devices: a controller ID is required")
	}
	id := c.Args().First()
	fs := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.tokens, "tokens", o.tokens, "")
	if add {
		fs.BoolVar(&o.replace, "replace", o.replace, "")
	}
	if err := fs.Parse(c.Args().Tail()); err != nil {
		return "", o, fmt.Errorf("devices: %w", err)
	}
	if fs.NArg() > 0 {
		return "", o, fmt.Errorf("devices: one controller ID at a time, got also %q", fs.Args())
	}
	if err := egp.ValidID(id); err != nil {
		return "", o, fmt.Errorf("devices: %q: %w", id, err)
	}
	return id, o, nil
}

// tokenEntry is a line of the token file that names a controller.
type tokenEntry struct {
	id   string // a controller ID, a prefix ending in '*', or '*'
	kind string // sha256 or plain
}

func entryOf(line string) (tokenEntry, bool) {
	f := strings.Fields(line)
	if len(f) != 2 || strings.HasPrefix(f[0], "#") {
		return tokenEntry{}, false
	}
	kind := "plain"
	if strings.HasPrefix(f[1], "sha256:") {
		kind = "sha256"
	}
	return tokenEntry{id: f[0], kind: kind}, true
}

func readTokenEntries(path string) ([]tokenEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	var out []tokenEntry
	for _, l := range strings.Split(string(b), "\n") {
		if e, ok := entryOf(l); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// addDevice makes a token for controller id, adds "<id> sha256:<hex>" to
// the token file and returns the token. An id already in the file is an
// error unless replace, which drops its earlier lines.
func addDevice(path, id string, replace bool, random io.Reader) (string, error) {
	raw := make([]byte, 32)
	if _, err := io.ReadFull(random, raw); err != nil {
		return "", fmt.Errorf("devices: %w", err)
	}
	// URL-safe base64: one word, fit for the lines protocol's HELLO too.
	token := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	err := editTokens(path, func(lines []string) ([]string, error) {
		kept := lines[:0]
		for _, l := range lines {
			if e, ok := entryOf(l); ok && e.id == id {
				if !replace {
					return nil, fmt.Errorf("devices: %s is enrolled already in %s (--replace gives it a new token)", id, path)
				}
				continue
			}
			kept = append(kept, l)
		}
		return append(kept, id+" sha256:"+hex.EncodeToString(sum[:])), nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// removeDevice drops controller id's lines from the token file.
func removeDevice(path, id string) error {
	return editTokens(path, func(lines []string) ([]string, error) {
		kept := lines[:0]
		for _, l := range lines {
			if e, ok := entryOf(l); ok && e.id == id {
				continue
			}
			kept = append(kept, l)
		}
		if len(kept) == len(lines) {
			return nil, fmt.Errorf("devices: %s is not enrolled in %s", id, path)
		}
		return kept, nil
	})
}

// editTokens rewrites the token file with edit's lines: one edit at a
// time (a lock on its directory), and atomically (a new file renamed over
// it), so that an appliance re-reading it never sees half a file. A new
// file is 0640; an existing one keeps its mode, owner and group (the
// package's is root:edgegate, which the service reads it as).
func editTokens(path string, edit func([]string) ([]string, error)) error {
	dir := filepath.Dir(path)
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("devices: lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(d.Fd()), syscall.LOCK_UN)

	mode, uid, gid := fs.FileMode(0o640), -1, -1
	var lines []string
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("devices: %w", err)
	}
	if lines, err = edit(lines); err != nil {
		return err
	}
	var out bytes.Buffer
	for _, l := range lines {
		out.WriteString(l)
		out.WriteByte('\n')
	}

	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if uid >= 0 {
		fi, err := tmp.Stat()
		if err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != uid || int(st.Gid) != gid) {
			if err := tmp.Chown(uid, gid); err != nil {
				return fmt.Errorf("devices: %s must keep its owner %d:%d: %w", path, uid, gid, err)
			}
		}
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	done = true
	d.Sync() // the rename, durably
	return nil
}
