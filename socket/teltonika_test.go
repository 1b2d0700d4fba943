package socket

import (
	"strings"
	"testing"
)

// TestParseIMEIs: the allowlist takes IMEIs (1 to 17 digits), "*",
// blank lines and comments; anything else is an error naming its line.
func TestParseIMEIs(t *testing.T) {
	l, err := parseIMEIs([]byte("# fleet A\n356307042441013\n\n  862012345678901  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.any || len(l.imei) != 2 {
		t.Fatalf("got %+v", l)
	}
	for _, imei := range []string{"356307042441013", "862012345678901"} {
		if _, ok := l.imei[imei]; !ok {
			t.Errorf("%s not on the list", imei)
		}
	}
	if l, err := parseIMEIs([]byte("*\n")); err != nil || !l.any {
		t.Fatalf("*: %+v, %v", l, err)
	}
	for _, bad := range []string{"35630704244101x", "356307042441013 token", "123456789012345678", "sim-000001"} {
		if _, err := parseIMEIs([]byte("# x\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v, want an error naming line 2", bad, err)
		}
	}
}
