package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestManPage: `edgegate man` prints a troff page of section 1 that lists
// every command a person can use (not the hidden ones) and their flags.
func TestManPage(t *testing.T) {
	var out, errOut bytes.Buffer
	app := newApp(noRun(t), &out, &errOut)
	if err := app.Run([]string{"edgegate", "man"}); err != nil {
		t.Fatalf("edgegate man: %v\n%s", err, errOut.String())
	}
	page := out.String()
	for _, want := range []string{".TH edgegate 1", ".SH NAME", ".SH DESCRIPTION", "/etc/edgegate/edgegate.yaml", "--devices.listen", "--controllers"} {
		if !strings.Contains(page, want) {
			t.Errorf("the manual page lacks %q", want)
		}
	}
	for _, c := range app.Commands {
		listed := strings.Contains(page, "\n.SH "+c.Name+"\n") || strings.Contains(page, "\n.SH "+c.Name+", ")
		if listed == c.Hidden {
			t.Errorf("command %s (hidden %v): listed %v in the manual page", c.Name, c.Hidden, listed)
		}
	}
	if app.Description != "" {
		t.Error("edgegate man changed the application's description (--help shows it)")
	}
}

// TestBashCompletion: the script `edgegate completion bash` prints (the
// package's /usr/share/bash-completion/completions/edgegate) completes
// commands and flags by asking the binary, in a real bash.
func TestBashCompletion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := newApp(noRun(t), &out, &errOut).Run([]string{"edgegate", "completion", "bash"}); err != nil {
		t.Fatal(err)
	}
	if out.String() != bashCompletion {
		t.Fatal("edgegate completion bash does not print the script")
	}
	if err := newApp(noRun(t), &out, &errOut).Run([]string{"edgegate", "completion", "zsh"}); err == nil {
		t.Error("edgegate completion zsh: no error")
	}
	if testing.Short() {
		t.Skip("long: builds the binary to complete with bash")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "edgegate.bash")
	if err := os.WriteFile(script, []byte(bashCompletion), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(edgegateBinary(t), filepath.Join(dir, "edgegate")); err != nil {
		t.Fatal(err)
	}
	// With the package bash-completion, as on an installed system, the
	// script uses its _init_completion; without it, its own fallback.
	preamble := []string{""}
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err == nil {
		preamble = append(preamble, "source /usr/share/bash-completion/bash_completion; ")
	}
	for _, pre := range preamble {
		complete := func(line ...string) string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// As bash does on TAB: the words so far, the one being completed last.
			words := "(" + strings.Join(line, " ") + ")"
			cmd := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c",
				pre+`source "$1"; COMP_WORDS=`+words+`; COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; _edgegate; printf '%s\n' "${COMPREPLY[@]}"`,
				"bash", script)
			cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash completion of %v: %v\n%s", line, err, b)
			}
			return string(b)
		}
		if got := complete("edgegate", "st"); !strings.Contains(got, "status\n") {
			t.Errorf("%sedgegate st<TAB>: %q, want status", pre, got)
		}
		if got := complete("edgegate", "simulate", "--contr"); !strings.Contains(got, "--controllers\n") {
			t.Errorf("%sedgegate simulate --contr<TAB>: %q, want --controllers", pre, got)
		}
	}
}
