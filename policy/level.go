package policy

import (
	"fmt"
	"strings"
)

// Level is a verdict on the DESIGN §4 scale, and a rule's threshold: the
// lowest level still allowed. The zero value is "no level" (a check that
// was not run, or a temporary error): it is below every threshold, so it can
// never pass one by accident.
type Level int

// Levels, in order: Fail < Gray < Pass.
const (
	Fail Level = iota + 1
	Gray
	Pass
)

func (l Level) String() string {
	switch l {
	case Fail:
		return "fail"
	case Gray:
		return "gray"
	case Pass:
		return "pass"
	}
	return "unknown"
}

// ParseLevel reads "pass", "gray" or "fail" (any case).
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pass":
		return Pass, nil
	case "gray", "grey":
		return Gray, nil
	case "fail":
		return Fail, nil
	}
	return 0, fmt.Errorf("invalid level %q: want pass, gray or fail", s)
}
