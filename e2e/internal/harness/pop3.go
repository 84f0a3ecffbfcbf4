package harness

import (
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// POP3Fetch logs in to a POP3 server with USER/PASS and returns every
// message in the mailbox (RETR), leaving them there (QUIT without DELE).
func POP3Fetch(addr, user, pass string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	ok := func() (string, error) {
		line, err := tp.ReadLine()
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(line, "+OK") {
			return "", fmt.Errorf("POP3: %s", line)
		}
		return line, nil
	}
	cmd := func(format string, args ...any) (string, error) {
		if err := tp.PrintfLine(format, args...); err != nil {
			return "", err
		}
		return ok()
	}
	if _, err := ok(); err != nil {
		return nil, err
	}
	if _, err := cmd("USER %s", user); err != nil {
		return nil, err
	}
	if _, err := cmd("PASS %s", pass); err != nil {
		return nil, err
	}
	stat, err := cmd("STAT")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(stat)
	if len(f) < 3 {
		return nil, fmt.Errorf("POP3: STAT answered %q", stat)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return nil, fmt.Errorf("POP3: STAT answered %q", stat)
	}
	var msgs []string
	for i := 1; i <= n; i++ {
		if _, err := cmd("RETR %d", i); err != nil {
			return nil, err
		}
		lines, err := tp.ReadDotLines()
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, strings.Join(lines, "\n")+"\n")
	}
	if _, err := cmd("QUIT"); err != nil {
		return nil, err
	}
	return msgs, nil
}
