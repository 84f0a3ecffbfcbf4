package pop3

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill the plugin when smsmilter dies without
// stopping it: a go-plugin server does not notice its host is gone, and an
// orphan would keep the POP3 ports, so the next daemon could not listen.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
