//go:build !linux

package pop3

import "os/exec"

func setProcAttr(*exec.Cmd) {}
