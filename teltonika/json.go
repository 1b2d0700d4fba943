package teltonika

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// maxSafeInt is the largest integer a JSON consumer that reads numbers as
// IEEE doubles (JavaScript, many others) holds exactly.
const maxSafeInt = 1<<53 - 1

// AppendJSON appends r as one JSON object, as the parser publishes it:
//
//	{"imei":"356307042441013","codec":8,"ts":"<RFC 3339, ms, UTC>",
//	 "priority":0,"lon":55.7956015,"lat":25.6808615,"alt":-6,"angle":0,
//	 "satellites":18,"speed":0,"event":0,
//	 "io":{"1":0,"71":3,"66":26268,"146":0,"199":0,"145":0}}
//
// codec is the codec the record came in, as a number (8, 142, 16). ts is
// RFC 3339 in UTC with milliseconds. lon and lat are degrees with exactly
// seven decimals, the wire's resolution, so no float rounding creeps in.
// "generation" is present for Codec 16 only. "io" maps each IO ID, in
// decimal, to its value, in wire order (Record.IO's): an unsigned number
// for fixed-size values, a decimal string for 8-byte values over 2^53-1
// (which doubles do not hold exactly), a lowercase hex string for
// variable-length ones. An ID sent twice in a record appears twice.
func AppendJSON(dst []byte, imei string, codec byte, r *Record) []byte {
	dst = append(dst, `{"imei":`...)
	dst = appendString(dst, imei)
	dst = append(dst, `,"codec":`...)
	dst = strconv.AppendUint(dst, uint64(codec), 10)
	dst = append(dst, `,"ts":"`...)
	dst = appendTime(dst, r.Timestamp)
	dst = append(dst, `","priority":`...)
	dst = strconv.AppendUint(dst, uint64(r.Priority), 10)
	dst = append(dst, `,"lon":`...)
	dst = appendDegrees(dst, r.Lon)
	dst = append(dst, `,"lat":`...)
	dst = appendDegrees(dst, r.Lat)
	dst = append(dst, `,"alt":`...)
	dst = strconv.AppendInt(dst, int64(r.Alt), 10)
	dst = append(dst, `,"angle":`...)
	dst = strconv.AppendUint(dst, uint64(r.Angle), 10)
	dst = append(dst, `,"satellites":`...)
	dst = strconv.AppendUint(dst, uint64(r.Satellites), 10)
	dst = append(dst, `,"speed":`...)
	dst = strconv.AppendUint(dst, uint64(r.Speed), 10)
	dst = append(dst, `,"event":`...)
	dst = strconv.AppendUint(dst, uint64(r.Event), 10)
	if codec == Codec16 {
		dst = append(dst, `,"generation":`...)
		dst = strconv.AppendUint(dst, uint64(r.Generation), 10)
	}
	dst = append(dst, `,"io":{`...)
	for i, e := range r.IO {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = strconv.AppendUint(dst, uint64(e.ID), 10)
		dst = append(dst, `":`...)
		switch {
		case e.Size == 0:
			dst = appendHex(dst, e.Bytes)
		case e.Value > maxSafeInt:
			dst = append(dst, '"')
			dst = strconv.AppendUint(dst, e.Value, 10)
			dst = append(dst, '"')
		default:
			dst = strconv.AppendUint(dst, e.Value, 10)
		}
	}
	return append(dst, "}}"...)
}

// appendDegrees appends v×1e-7 with seven decimals, from the integer.
func appendDegrees(dst []byte, v int32) []byte {
	x := int64(v)
	if x < 0 {
		dst = append(dst, '-')
		x = -x
	}
	dst = strconv.AppendInt(dst, x/1e7, 10)
	dst = append(dst, '.')
	return appendPadded(dst, int(x%1e7), 7)
}

// appendPadded appends v (non-negative, under 10^width) in width digits.
func appendPadded(dst []byte, v, width int) []byte {
	var b [8]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:width]...)
}

// appendTime appends ms as RFC 3339 in UTC with milliseconds, computing
// the civil date directly: it is on every record's path.
func appendTime(dst []byte, ms int64) []byte {
	if ms < 0 || ms > MaxTimestamp {
		// Not RFC 3339 (the year has no four digits), but still a JSON
		// string; Decode never returns such a record.
		return time.UnixMilli(ms).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	}
	const msPerDay = 86400000
	days, rem := int(ms/msPerDay), int(ms%msPerDay)
	// Days since 1970-01-01 to a proleptic Gregorian date, in eras of 400
	// years starting on March 1 (Howard Hinnant's civil_from_days).
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
	}
	y := yoe + era*400
	if m <= 2 {
		y++
	}
	dst = appendPadded(dst, y, 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, m, 2)
	dst = append(dst, '-')
	dst = appendPadded(dst, d, 2)
	dst = append(dst, 'T')
	dst = appendPadded(dst, rem/3600000, 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, rem/60000%60, 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, rem/1000%60, 2)
	dst = append(dst, '.')
	dst = appendPadded(dst, rem%1000, 3)
	return append(dst, 'Z')
}

const hexDigits = "0123456789abcdef"

func appendHex(dst []byte, b []byte) []byte {
	dst = append(dst, '"')
	for _, c := range b {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
	}
	return append(dst, '"')
}

// appendString appends s as a JSON string. The IMEI is digits by the
// handshake's check; escaping is for callers that pass something else.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
		}
	}
	return append(dst, '"')
}
