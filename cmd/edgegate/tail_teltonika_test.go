package main

import (
	"testing"

	"github.com/edgegate/edgegate/teltonika"
)

// TestTeltonikaSummary: tail shows a Teltonika record on one line with
// its time and position as sent; other bodies are left alone.
func TestTeltonikaSummary(t *testing.T) {
	r := teltonika.Record{Timestamp: 1441196500000, Lon: 557956015, Lat: 256808615, Alt: -6, Satellites: 18, Speed: 7, Event: 239,
		IO: []teltonika.IO{{ID: 239, Size: 1, Value: 1}, {ID: 66, Size: 2, Value: 12000}}}
	got, ok := teltonikaSummary(teltonika.AppendJSON(nil, "356307042441013", teltonika.Codec8E, &r))
	want := "imei=356307042441013 ts=2015-09-02T12:21:40.000Z lat=25.6808615 lon=55.7956015 alt=-6m speed=7km/h angle=0 sat=18 event=239 io=2 codec=8E"
	if !ok || got != want {
		t.Fatalf("got %q, %v\nwant %q", got, ok, want)
	}
	if _, ok := teltonikaSummary([]byte(`{"c":"x"}`)); ok {
		t.Fatal("a body of another device taken for a Teltonika record")
	}
}
