package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// teltonikaSummary renders a Teltonika record (its JSON, see
// teltonika.AppendJSON) on one readable line for tail: time, position,
// motion and how many IO elements, which the JSON lists in full (tail
// --json). ok is false for any other body.
func teltonikaSummary(body []byte) (string, bool) {
	if !bytes.HasPrefix(body, []byte(`{"imei":`)) {
		return "", false
	}
	var r struct {
		IMEI       string          `json:"imei"`
		Codec      int             `json:"codec"`
		TS         string          `json:"ts"`
		Priority   int             `json:"priority"`
		Lat        json.Number     `json:"lat"` // as sent: 7 decimals
		Lon        json.Number     `json:"lon"`
		Alt        int             `json:"alt"`
		Angle      int             `json:"angle"`
		Satellites int             `json:"satellites"`
		Speed      int             `json:"speed"`
		Event      int             `json:"event"`
		IO         json.RawMessage `json:"io"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.TS == "" {
		return "", false
	}
	codec := map[int]string{8: "8", 0x8E: "8E", 16: "16"}[r.Codec]
	var b strings.Builder
	fmt.Fprintf(&b, "imei=%s ts=%s lat=%s lon=%s alt=%dm speed=%dkm/h angle=%d sat=%d", r.IMEI, r.TS, r.Lat, r.Lon, r.Alt, r.Speed, r.Angle, r.Satellites)
	if r.Satellites == 0 {
		b.WriteString(" (no fix)")
	}
	if r.Event != 0 {
		fmt.Fprintf(&b, " event=%d", r.Event)
	}
	if r.Priority != 0 {
		fmt.Fprintf(&b, " priority=%d", r.Priority)
	}
	var io map[string]json.RawMessage
	json.Unmarshal(r.IO, &io)
	fmt.Fprintf(&b, " io=%d codec=%s", len(io), codec)
	return b.String(), true
}
