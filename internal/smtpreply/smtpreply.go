// Package smtpreply is the error type for failures that reach an SMTP client:
// each carries its reply code and enhanced status code (RFC 3463), so the
// milter can answer "550 5.7.1 ..." without knowing where the error arose.
package smtpreply

import (
	"errors"
	"fmt"
	"strings"
)

// Error is an SMTP reply. Code 4xx is temporary, 5xx permanent.
type Error struct {
	Code     int    // 451, 550, 552, ...
	Enhanced string // "4.3.0", "5.7.1", ...
	Text     string // what a person reads; one line
	Err      error  // underlying cause, not shown to the client
}

// New returns an SMTP reply error.
func New(code int, enhanced, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}
}

// Wrap returns an SMTP reply error that keeps err as its cause.
func Wrap(err error, code int, enhanced, format string, args ...any) *Error {
	e := New(code, enhanced, format, args...)
	e.Err = err
	return e
}

// Error returns the reply line as the client sees it, e.g. "550 5.7.1 not authorized".
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, oneLine(e.Text))
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the client should retry later.
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// As extracts the SMTP reply from err, if it carries one.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// oneLine keeps a reply to one line of printable text: milter replies with
// CR or LF would break the protocol, and Postfix ignores malformed ones.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
