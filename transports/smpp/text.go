package smpp

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/warthog618/sms/encoding/gsm7"
	"golang.org/x/text/encoding/charmap"
)

// data_coding values (SMPP 3.4 §5.2.19).
const (
	codingDefault  byte = 0x00 // SMSC default alphabet: GSM 03.38 here, unpacked septets
	codingIA5      byte = 0x01 // IA5 (ASCII)
	codingBinary   byte = 0x02
	codingLatin1   byte = 0x03
	codingBinary2  byte = 0x04
	codingCyrillic byte = 0x06
	codingHebrew   byte = 0x07
	codingUCS2     byte = 0x08
)

// Part sizes (3GPP TS 23.040 §9.2.3.24.1): a 6-octet concatenation UDH
// leaves 134 octets: 153 septets or 67 UCS-2 code units.
const (
	gsmSingle  = 160
	gsmPart    = 153
	ucs2Single = 70
	ucs2Part   = 67
	escape     = 0x1B // GSM 03.38 escape to the extension table
)

// encoded is a message ready for submit_sm: one user-data slice per part,
// without the UDH.
type encoded struct {
	coding byte
	parts  [][]byte
}

// encodeText encodes text per encoding ("gsm7", "ucs2"; "" picks GSM 03.38
// when every character fits) and splits it into parts. Splits never fall
// inside an escape pair or a surrogate pair, the rules the milter counts
// parts with. fellBack is set when "gsm7" was asked for but the text does
// not fit the GSM alphabet: it is sent as UCS-2 rather than mangled.
func encodeText(text, encoding string) (e encoded, fellBack bool, err error) {
	switch encoding {
	case "gsm7", "":
		septets, gerr := gsm7.Encode([]byte(text))
		if gerr == nil {
			return encoded{coding: codingDefault, parts: splitGSM(septets)}, false, nil
		}
		fellBack = encoding == "gsm7"
	case "ucs2":
	default:
		return encoded{}, false, fmt.Errorf("unknown encoding %q (want gsm7 or ucs2)", encoding)
	}
	return encoded{coding: codingUCS2, parts: splitUCS2(utf16.Encode([]rune(text)))}, fellBack, nil
}

// splitGSM cuts unpacked septets into parts of at most 153 septets (one
// part of up to 160 needs no UDH), keeping each escape pair whole.
func splitGSM(s []byte) [][]byte {
	if len(s) <= gsmSingle {
		return [][]byte{s}
	}
	var parts [][]byte
	start := 0
	for i := 0; i < len(s); {
		w := 1
		if s[i] == escape && i+1 < len(s) {
			w = 2
		}
		if i+w-start > gsmPart {
			parts = append(parts, s[start:i])
			start = i
		}
		i += w
	}
	return append(parts, s[start:])
}

// splitUCS2 cuts UTF-16 code units into parts of at most 67 units (one part
// of up to 70 needs no UDH), keeping each surrogate pair whole, and returns
// them big-endian.
func splitUCS2(u []uint16) [][]byte {
	be := func(u []uint16) []byte {
		b := make([]byte, 2*len(u))
		for i, c := range u {
			binary.BigEndian.PutUint16(b[2*i:], c)
		}
		return b
	}
	if len(u) <= ucs2Single {
		return [][]byte{be(u)}
	}
	var parts [][]byte
	start := 0
	for i := 0; i < len(u); {
		w := 1
		if utf16.IsSurrogate(rune(u[i])) && u[i] < 0xDC00 && i+1 < len(u) {
			w = 2
		}
		if i+w-start > ucs2Part {
			parts = append(parts, be(u[start:i]))
			start = i
		}
		i += w
	}
	return append(parts, be(u[start:]))
}

// concatUDH is the user data header of part seq (1-based) of total, with the
// 8-bit reference information element (IEI 0x00).
func concatUDH(ref, total, seq byte) []byte {
	return []byte{0x05, 0x00, 0x03, ref, total, seq}
}

// decodeText turns incoming user data into text per data_coding. It never
// fails: an SMS that cannot be read exactly is still worth delivering, so
// odd bytes become replacement characters or Latin-1.
func decodeText(coding byte, b []byte) string {
	if coding >= 0xF0 {
		// GSM 03.38 DCS "data coding/message class" group: bit 2 picks 8-bit.
		if coding&0x04 == 0 {
			coding = codingDefault
		} else {
			coding = codingBinary2
		}
	}
	switch coding {
	case codingDefault:
		for _, c := range b {
			if c >= 0x80 {
				// Not septets: some SMSCs' "default alphabet" is Latin-1.
				return latin1(b)
			}
		}
		s, err := gsm7.Decode(b)
		if err != nil {
			return latin1(b)
		}
		return string(s)
	case codingIA5, codingLatin1:
		return latin1(b)
	case codingUCS2:
		if len(b)%2 == 1 {
			b = b[:len(b)-1]
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(b[2*i:])
		}
		return string(utf16.Decode(u)) // lone surrogates become U+FFFD
	case codingCyrillic:
		s, _ := charmap.ISO8859_5.NewDecoder().Bytes(b)
		return string(s)
	case codingHebrew:
		s, _ := charmap.ISO8859_8.NewDecoder().Bytes(b)
		return string(s)
	}
	// Binary or unknown codings: UTF-8 if it is, else Latin-1.
	if utf8.Valid(b) {
		return string(b)
	}
	return latin1(b)
}

func latin1(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}
