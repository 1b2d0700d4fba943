// Command packaging builds the edgegate Debian package with nfpm, from a
// built binary, reproducibly: every file time is the fixed mtime, so two
// builds of the same binary give the same bytes.
//
//	go run . -binary ../dist/edgegate -version 0.1.0 -out ../dist
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	binary := flag.String("binary", "", "the edgegate binary to package (required)")
	version := flag.String("version", envOr("VERSION", "0.1.0"), "package version")
	arch := flag.String("arch", runtime.GOARCH, "Debian architecture")
	out := flag.String("out", "dist", "output directory")
	mtime := flag.Int64("mtime", sourceDateEpoch(), "unix time of every file (SOURCE_DATE_EPOCH)")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "packaging: -binary is required")
		os.Exit(2)
	}
	path, err := build(*binary, *version, *arch, *out, time.Unix(*mtime, 0).UTC())
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// sourceDateEpoch is SOURCE_DATE_EPOCH, else a fixed date.
func sourceDateEpoch() int64 {
	if v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		return v
	}
	return time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).Unix()
}

// dir is the packaging directory (this program's sources).
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func build(binary, version, arch, out string, mtime time.Time) (string, error) {
	d := dir()
	changelog, err := writeChangelog(version+"-1", mtime)
	if err != nil {
		return "", err
	}
	defer os.Remove(changelog)
	file := func(src, dst, typ string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root", MTime: mtime}}
	}
	info := &nfpm.Info{
		Name:       "edgegate",
		Arch:       arch,
		Platform:   "linux",
		Version:    version,
		Section:    "net",
		Priority:   "optional",
		Maintainer: "edgegate developers <dev@edgegate.invalid>",
		Description: "IoT edge gateway appliance\n" +
			"edgegate accepts device connections on the LAN and parses every\n" +
			"device message, in parallel across controllers and strictly in order\n" +
			"within one controller, without losing any. It embeds a NATS server;\n" +
			"several appliances cluster over NATS routes and share per-controller\n" +
			"leases in Redis.",
		Homepage:  "https://github.com/edgegate/edgegate",
		License:   "Apache-2.0",
		Release:   "1",
		Changelog: changelog,
		MTime:     mtime,
		Overridables: nfpm.Overridables{
			Depends:  []string{"adduser", "procps"},
			Suggests: []string{"redis-server"}, // only a cluster needs one
			Contents: files.Contents{
				file(binary, "/usr/bin/edgegate", "", 0o755),
				file(filepath.Join(d, "..", "systemd", "edgegate.service"), "/lib/systemd/system/edgegate.service", "", 0o644),
				// Both 0640 root:edgegate, set by postinst with
				// dpkg-statoverride (the edgegate group does not exist
				// before it): the configuration and the service's options
				// are not for every local user.
				file(filepath.Join(d, "deb", "edgegate.yaml"), "/etc/edgegate/edgegate.yaml", files.TypeConfig, 0o644),
				file(filepath.Join(d, "deb", "default"), "/etc/default/edgegate", files.TypeConfig, 0o644),
				file(filepath.Join(d, "deb", "copyright"), "/usr/share/doc/edgegate/copyright", "", 0o644),
				file(filepath.Join(d, "deb", "lintian-overrides"), "/usr/share/lintian/overrides/edgegate", "", 0o644),
			},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(d, "deb", "postinst"),
				PreRemove:   filepath.Join(d, "deb", "prerm"),
				PostRemove:  filepath.Join(d, "deb", "postrm"),
			},
			Deb: nfpm.Deb{
				Predepends:  []string{"init-system-helpers (>= 1.54~)"},
				Compression: "xz",
			},
		},
	}
	tmp, err := os.MkdirTemp("", "edgegate-docs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	docs, err := docFiles(d, tmp, file)
	if err != nil {
		return "", err
	}
	info.Contents = append(info.Contents, docs...)
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(out, deb.Default.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// writeChangelog writes the Debian changelog source (chglog YAML) for this
// version into a temporary file: its entry must carry the package version.
func writeChangelog(version string, date time.Time) (string, error) {
	f, err := os.CreateTemp("", "edgegate-changelog-*.yml")
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, `- semver: %s
  date: %s
  packager: edgegate developers <dev@edgegate.invalid>
  deb:
    urgency: medium
    distributions: [unstable]
  changes:
    - note: Release %s.
`, version, date.Format(time.RFC3339), version)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return f.Name(), err
}
