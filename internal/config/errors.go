package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration file.
//
// Line is 1-based. Problems that concern the whole file rather than one
// place in it (an empty file, a missing required top-level key) are put on
// line 1, so that editors and compile-mode parsers that jump to FILE:LINE
// always land somewhere real.
type Problem struct {
	File string
	Line int
	Msg  string
}

// String formats the problem as FILE:LINE: message.
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Errors is every problem found in a configuration file, in line order.
// Parse and Load report them all at once so that a mail admin can fix the
// file in one pass instead of one error per run.
type Errors struct {
	Problems []Problem
}

// Error is one FILE:LINE: message per line, with no trailing newline, so
// that the CLI can print it as is.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by line and keeps the order in which they
// were found for problems on the same line (a stable sort), so that output
// reads top to bottom like the file.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}

// oneLine makes sure a message stays on one line: a newline inside a value
// quoted into a message would otherwise break the FILE:LINE: format that
// check-config's callers parse.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u0085'
}
