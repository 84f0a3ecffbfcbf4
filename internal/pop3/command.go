package pop3

import (
	"errors"
	"strconv"
	"strings"
)

// command is one parsed command line.
type command struct {
	name string   // keyword, upper-cased
	args []string // space-separated arguments (runs of spaces collapse)
	// rest is everything after the keyword and the one space that ends
	// it, verbatim: USER and PASS take it whole, because RFC 1939 lets a
	// server treat spaces in the PASS argument as part of the password.
	rest string
}

// maxKeyword is longer than any POP3 keyword (they have 3 or 4 letters,
// extensions up to 8) so garbage is refused early without echoing it.
const maxKeyword = 8

var (
	errEmptyCommand = errors.New("empty command line")
	errBadKeyword   = errors.New("invalid command keyword")
)

// parseCommand parses a command line without its line ending. It never
// fails on arguments: each command checks its own.
func parseCommand(line []byte) (command, error) {
	s := string(line)
	kw, rest, _ := strings.Cut(s, " ")
	if kw == "" {
		return command{}, errEmptyCommand
	}
	if len(kw) > maxKeyword {
		return command{}, errBadKeyword
	}
	for i := 0; i < len(kw); i++ {
		c := kw[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return command{}, errBadKeyword
		}
	}
	var args []string
	for _, a := range strings.Split(rest, " ") {
		if a != "" {
			args = append(args, a)
		}
	}
	return command{name: strings.ToUpper(kw), args: args, rest: rest}, nil
}

// parseNumber parses a message number or line count: ASCII digits only
// (no sign, no spaces), so "1", "01" are numbers and "+1", "1x", "" are not.
// A number too large for an int is returned as ok with the maximum value:
// for TOP that means "all lines", and as a message number it is out of
// range anyway.
func parseNumber(s string) (n int, ok bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return int(^uint(0) >> 1), true
	}
	return v, true
}
