package systemd_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// These tests need Debian tools (dpkg-deb, lintian, debootstrap,
// systemd-analyze). Without them they skip, unless
// EDGEGATE_REQUIRE_PACKAGING is set (CI sets it): then they fail.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("EDGEGATE_REQUIRE_PACKAGING") != "" {
				t.Fatalf("%s not found and EDGEGATE_REQUIRE_PACKAGING is set", tool)
			}
			t.Skipf("%s not found: skipping (apt-get install %s)", tool, tool)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// Standard output only: go run prints "go: downloading ..." on
	// standard error when the module cache is cold (a fresh CI machine).
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// workDir outlives single tests: the package built once is used by several.
var workDir string

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "edgegate-packaging-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(workDir)
	os.Exit(code)
}

// buildDeb builds the binary and the package of version, as make deb does.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	out, err := os.MkdirTemp(workDir, "deb-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(out, "edgegate")
	env := []string{"CGO_ENABLED=0", "SOURCE_DATE_EPOCH=1795478400"}
	run(t, "..", env, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.version="+version, "-o", bin, "./cmd/edgegate")
	path := strings.TrimSpace(run(t, "../packaging", env, "go", "run", ".", "-binary", bin, "-version", version, "-out", out))
	return path
}

var debOnce struct {
	sync.Once
	path string
}

func theDeb(t *testing.T) string {
	t.Helper()
	debOnce.Do(func() { debOnce.path = buildDeb(t, "0.1.0") })
	if debOnce.path == "" {
		t.Fatal("building the package failed before")
	}
	return debOnce.path
}

func TestUnitVerifies(t *testing.T) {
	need(t, "systemd-analyze")
	unit := filepath.Join(t.TempDir(), "edgegate.service")
	b, err := os.ReadFile("edgegate.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that the programs of ExecStart and ExecReload exist:
	// point them at one that does.
	b = bytes.ReplaceAll(b, []byte("=/usr/bin/edgegate "), []byte("=/bin/true "))
	// The credential example, uncommented as a drop-in would add it,
	// verifies too.
	const credential = "#LoadCredential=redis-url:/etc/edgegate/redis-url\n"
	if !bytes.Contains(b, []byte(credential)) {
		t.Fatalf("the unit lacks the example %q", credential)
	}
	for _, unitText := range [][]byte{b, bytes.Replace(b, []byte(credential), []byte(credential[1:]), 1)} {
		os.WriteFile(unit, unitText, 0o644)
		// --man=no: the manual page of Documentation= is made by the
		// package build; TestPackageContents checks that it ships.
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", unit)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, stderr.String())
		}
	}
	out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for edgegate.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure: %.1f", level)
	if level > 2.0 {
		t.Fatalf("exposure %.1f, want at most 2.0:\n%s", level, out)
	}
}

// TestDefaultsHoldNoSecret: /etc/default/edgegate, which the unit reads
// into the environment and whose options end up in the command line (ps
// shows it to every local user), sets nothing secret and suggests no
// secret in a flag or variable: it points to credentials and *_file.
func TestDefaultsHoldNoSecret(t *testing.T) {
	b, err := os.ReadFile("../packaging/deb/default")
	if err != nil {
		t.Fatal(err)
	}
	secretFlag := regexp.MustCompile(`(?i)(--(lease\.redis|nats\.password|nats\.cluster\.password)[= ]|EDGEGATE_(LEASE_REDIS|NATS_PASSWORD|NATS_CLUSTER_PASSWORD)=|://[^ ]*@)`)
	for i, line := range strings.Split(string(b), "\n") {
		if m := secretFlag.FindString(line); m != "" {
			t.Errorf("line %d suggests a secret in a flag or variable (%q): %s", i+1, m, line)
		}
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != `EDGEGATE_OPTS=""` {
			t.Errorf("line %d sets something: %s", i+1, line)
		}
	}
	for _, want := range []string{"LoadCredential=redis-url:", "redis_file: redis-url"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the defaults file does not show %q", want)
		}
	}
}

func TestPackageContents(t *testing.T) {
	if testing.Short() {
		t.Skip("long: builds the package")
	}
	need(t, "dpkg-deb", "lintian")
	deb := theDeb(t)
	info := run(t, ".", nil, "dpkg-deb", "-I", deb)
	for _, want := range []string{
		"Package: edgegate", "Version: 0.1.0-1", "Architecture: ",
		"Depends: adduser, procps", "Pre-Depends: init-system-helpers (>= 1.54~)", "Suggests: redis-server",
		"conffiles", "postinst", "prerm", "postrm",
	} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	conffiles := run(t, ".", nil, "sh", "-c", "dpkg-deb --ctrl-tarfile "+deb+" | tar -xO ./conffiles")
	for _, want := range []string{"/etc/edgegate/edgegate.yaml", "/etc/default/edgegate"} {
		if !strings.Contains(conffiles, want) {
			t.Errorf("conffiles lacks %s:\n%s", want, conffiles)
		}
	}
	if strings.Contains(info, "Recommends:") {
		t.Errorf("the package recommends something (apt would install it by default); a single appliance needs no Redis:\n%s", info)
	}
	contents := run(t, ".", nil, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"./usr/bin/edgegate", "./lib/systemd/system/edgegate.service", "./etc/edgegate/edgegate.yaml",
		"./etc/default/edgegate", "./usr/share/doc/edgegate/copyright", "./usr/share/doc/edgegate/changelog.Debian.gz",
		"./usr/share/doc/edgegate/docs/install.md", "./usr/share/doc/edgegate/docs/configuration.md",
		"./usr/share/bash-completion/completions/edgegate",
		"./usr/share/edgegate/prometheus/edgegate.rules.yml", "./usr/share/edgegate/grafana/edgegate.json",
	} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb -c lacks %s", want)
		}
	}
	// What the unit's Documentation= points at is in the package.
	unit, _ := os.ReadFile("edgegate.service")
	docs := regexp.MustCompile(`(?m)^Documentation=(.*)$`).FindSubmatch(unit)
	if docs == nil {
		t.Fatal("the unit has no Documentation=")
	}
	for _, uri := range strings.Fields(string(docs[1])) {
		path, ok := strings.CutPrefix(uri, "file://")
		if m := regexp.MustCompile(`^man:([a-z-]+)\(([0-9])\)$`).FindStringSubmatch(uri); m != nil {
			path, ok = fmt.Sprintf("/usr/share/man/man%s/%s.%s.gz", m[2], m[1], m[2]), true
		}
		if !ok {
			t.Errorf("Documentation=%s: neither file:// nor man:", uri)
		} else if !strings.Contains(contents, " ."+path+"\n") {
			t.Errorf("Documentation=%s: the package lacks %s", uri, path)
		}
	}
	// lintian, pedantic, fails on anything but the overridden tags (each
	// override in packaging/deb/lintian-overrides says why).
	cmd := exec.Command("lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic", deb)
	out, err := cmd.CombinedOutput()
	tags := strings.TrimSpace(strings.ReplaceAll(string(out), "running with root privileges is not recommended!", ""))
	if err != nil || tags != "" {
		t.Fatalf("lintian: %v\n%s", err, tags)
	}
}

func TestPackageReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("long: builds the package twice")
	}
	need(t, "dpkg-deb")
	a := theDeb(t)
	b := buildDeb(t, "0.1.0")
	if sa, sb := sha256File(t, a), sha256File(t, b); sa != sb {
		t.Fatalf("two builds differ: %s %s", sa, sb)
	} else {
		t.Logf("sha256 %s, twice", sa)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestInstallUpgradePurge installs the package in a fresh Debian chroot,
// edits the configuration, upgrades (the edit is kept), removes and purges.
func TestInstallUpgradePurge(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Debian chroot")
	}
	need(t, "dpkg-deb", "debootstrap", "chroot")
	if os.Geteuid() != 0 {
		t.Skip("debootstrap needs root")
	}
	root := filepath.Join(t.TempDir(), "chroot")
	mirror := os.Getenv("EDGEGATE_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	run(t, ".", nil, "debootstrap", "--variant=minbase", "--include=adduser,procps,init-system-helpers", "bookworm", root, mirror)
	in := func(script string) string {
		t.Helper()
		return run(t, ".", []string{"DEBIAN_FRONTEND=noninteractive"}, "chroot", root, "sh", "-ec", script)
	}
	install := func(deb string) string {
		t.Helper()
		b, _ := os.ReadFile(deb)
		os.WriteFile(filepath.Join(root, "tmp", "edgegate.deb"), b, 0o644)
		return in("dpkg --force-confold -i /tmp/edgegate.deb 2>&1")
	}
	// The first install says in two lines what listens and how to enrol
	// the first device.
	said := install(theDeb(t))
	for _, want := range []string{"edgegate: listens for devices on 0.0.0.0:7400", "edgegate devices add <controller-id>"} {
		if !strings.Contains(said, want) {
			t.Errorf("the first install does not say %q:\n%s", want, said)
		}
	}
	check := func(what, script, want string) {
		t.Helper()
		if got := strings.TrimSpace(in(script)); !strings.Contains(got, want) {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}
	check("system user", "getent passwd edgegate", "edgegate:x:")
	check("config mode", "stat -c '%a %U %G' /etc/edgegate/edgegate.yaml", "640 root edgegate")
	check("defaults mode", "stat -c '%a %U %G' /etc/default/edgegate", "640 root edgegate")
	check("device tokens", "stat -c '%a %U %G %s' /etc/edgegate/devices.tokens", "640 root edgegate 0")
	check("enable symlink", "readlink /etc/systemd/system/multi-user.target.wants/edgegate.service", "/lib/systemd/system/edgegate.service")
	check("binary runs", "edgegate version", "edgegate 0.1.0")
	check("docs", "ls /usr/share/doc/edgegate/README.md /usr/share/man/man1/edgegate.1.gz", "README.md")
	check("bash completion", "cat /usr/share/bash-completion/completions/edgegate", "complete -o bashdefault -o default -o nospace -F _edgegate edgegate")
	check("conffile registered", "dpkg-query -W -f='${Conffiles}' edgegate", "/etc/edgegate/edgegate.yaml")

	// A local edit survives an upgrade.
	in("sed -i 's|^# name: gw-1|name: edited-locally|' /etc/edgegate/edgegate.yaml")
	install(buildDeb(t, "0.1.1"))
	check("upgraded", "dpkg-query -W -f='${Version}' edgegate", "0.1.1-1")
	check("edit kept", "grep '^name:' /etc/edgegate/edgegate.yaml", "name: edited-locally")
	check("mode kept", "stat -c '%a %U %G' /etc/edgegate/edgegate.yaml", "640 root edgegate")
	check("defaults mode kept", "stat -c '%a %U %G' /etc/default/edgegate", "640 root edgegate")

	in("dpkg -r edgegate")
	check("removed: binary gone", "test -e /usr/bin/edgegate && echo present || echo gone", "gone")
	check("removed: config kept", "test -e /etc/edgegate/edgegate.yaml && echo kept || echo gone", "kept")

	in("mkdir -p /var/lib/edgegate/jetstream && dpkg -P edgegate")
	for what, path := range map[string]string{
		"purge: config": "/etc/edgegate", "purge: state": "/var/lib/edgegate",
		"purge: enable symlink": "/etc/systemd/system/multi-user.target.wants/edgegate.service",
		"purge: defaults":       "/etc/default/edgegate",
	} {
		check(what, fmt.Sprintf("test -e %s && echo present || echo gone", path), "gone")
	}
	check("purge: statoverride", "dpkg-statoverride --list /etc/edgegate/edgegate.yaml || echo none", "none")
	check("purge: defaults statoverride", "dpkg-statoverride --list /etc/default/edgegate || echo none", "none")
	check("purge: user", "getent passwd edgegate || echo none", "none")
}

// TestBootWithSystemd boots a Debian guest with systemd-nspawn, the
// package installed and enabled, and a probe unit that checks the service
// comes up (Type=notify), answers /readyz, handles messages, is restarted
// by the watchdog when stopped with SIGSTOP, and stops cleanly. The guest
// has a network namespace of its own (--private-network, loopback only):
// sharing the host's, its edgegate could not bind 7400 while anything on
// the host listened there, and its probe reached the host's listener
// instead (the cause of the "activating" failures seen before).
//
// When the machine cannot run a container at all (no namespaces for
// nspawn), the test skips unless EDGEGATE_REQUIRE_BOOT is set.
func TestBootWithSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("long: boots a Debian guest")
	}
	need(t, "dpkg-deb", "debootstrap", "chroot", "systemd-nspawn")
	if os.Geteuid() != 0 {
		t.Skip("debootstrap and systemd-nspawn need root")
	}
	root := filepath.Join(t.TempDir(), "guest")
	mirror := os.Getenv("EDGEGATE_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	run(t, ".", nil, "debootstrap", "--variant=minbase",
		"--include=systemd,systemd-sysv,dbus,adduser,procps,curl,init-system-helpers", "bookworm", root, mirror)
	b, _ := os.ReadFile(theDeb(t))
	os.WriteFile(filepath.Join(root, "tmp", "edgegate.deb"), b, 0o644)
	probe, _ := os.ReadFile("testdata/probe.sh")
	os.WriteFile(filepath.Join(root, "probe.sh"), probe, 0o755)
	os.WriteFile(filepath.Join(root, "etc/systemd/system/probe.service"), []byte(
		"[Unit]\nDescription=edgegate probe\nAfter=edgegate.service\n"+
			"[Service]\nType=oneshot\nExecStart=/probe.sh\nExecStartPost=/bin/systemctl poweroff\n"+
			"[Install]\nWantedBy=multi-user.target\n"), 0o644)
	run(t, ".", []string{"DEBIAN_FRONTEND=noninteractive"}, "chroot", root, "sh", "-ec",
		"dpkg -i /tmp/edgegate.deb && echo 'sim-* probe-token' >>/etc/edgegate/devices.tokens && systemctl enable probe.service")

	cmd := exec.Command("timeout", "300", "systemd-nspawn", "-D", root, "-b", "--register=no", "--keep-unit", "--private-network", "-q")
	console, _ := cmd.CombinedOutput()
	result, err := os.ReadFile(filepath.Join(root, "probe.result"))
	if err != nil {
		msg := fmt.Sprintf("the guest never ran its probe (%v); console:\n%s", cmd.ProcessState, tail(console, 3000))
		if os.Getenv("EDGEGATE_REQUIRE_BOOT") != "" {
			t.Fatal(msg)
		}
		t.Skip("this machine cannot boot a systemd-nspawn guest: " + msg)
	}
	t.Logf("probe:\n%s", result)
	oks := 0
	for _, line := range strings.Split(string(result), "\n") {
		if strings.HasPrefix(line, "FAIL") {
			t.Errorf("probe: %s", line)
		}
		if strings.HasPrefix(line, "OK") {
			oks++
		}
	}
	if oks != 8 {
		t.Errorf("probe: %d checks passed, want 8", oks)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
