// Package systemd holds the systemd unit of the appliance
// (edgegate.service) and the tests of the installed service: the unit
// passes systemd-analyze, and the Debian package built by ../packaging
// installs, upgrades, removes and purges cleanly in a Debian chroot.
package systemd
