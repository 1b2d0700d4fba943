package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2/files"
)

// contentFile makes one entry of the package (build's file).
type contentFile func(src, dst, typ string, mode os.FileMode) *files.Content

// docFiles returns what the package ships besides the program and its
// configuration: the README and docs/*.md under /usr/share/doc/edgegate
// (the unit's Documentation= points there), the manual page edgegate(1)
// and the bash completion, both generated from the command's own
// definitions, and the Prometheus alert rules and Grafana dashboard under
// /usr/share/edgegate. Generated files are written in tmp.
func docFiles(d, tmp string, file contentFile) (files.Contents, error) {
	root := filepath.Join(d, "..")
	const doc = "/usr/share/doc/edgegate/"
	out := files.Contents{
		file(filepath.Join(root, "README.md"), doc+"README.md", "", 0o644),
		file(filepath.Join(root, "monitoring", "edgegate.rules.yml"), "/usr/share/edgegate/prometheus/edgegate.rules.yml", "", 0o644),
		file(filepath.Join(root, "monitoring", "grafana-dashboard.json"), "/usr/share/edgegate/grafana/edgegate.json", "", 0o644),
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	if len(pages) == 0 {
		return nil, fmt.Errorf("no docs/*.md in %s", root)
	}
	for _, p := range pages { // Glob sorts them: the same order every build
		out = append(out, file(p, doc+"docs/"+filepath.Base(p), "", 0o644))
	}

	// The program for this machine, whatever the package's architecture:
	// it only prints its own manual page and completion script.
	cli := filepath.Join(tmp, "edgegate-host")
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", cli, "./cmd/edgegate")
	build.Dir = root
	build.Env = append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH, "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the command for its manual page: %v\n%s", err, b)
	}
	run := func(args ...string) ([]byte, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(cli, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("edgegate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.Bytes(), nil
	}
	man, err := run("man")
	if err != nil {
		return nil, err
	}
	manGz := filepath.Join(tmp, "edgegate.1.gz")
	if err := writeGzip(manGz, man); err != nil {
		return nil, err
	}
	completion, err := run("completion", "bash")
	if err != nil {
		return nil, err
	}
	bash := filepath.Join(tmp, "edgegate.bash")
	if err := os.WriteFile(bash, completion, 0o644); err != nil {
		return nil, err
	}
	return append(out,
		file(manGz, "/usr/share/man/man1/edgegate.1.gz", "", 0o644),
		file(bash, "/usr/share/bash-completion/completions/edgegate", "", 0o644),
	), nil
}

// writeGzip writes b gzipped as Debian wants a manual page: at the best
// compression, with no name and no time in the header (reproducible).
func writeGzip(path string, b []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
