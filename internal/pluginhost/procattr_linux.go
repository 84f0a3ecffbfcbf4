package pluginhost

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill the plugin when smsmilter dies without
// stopping it (SIGKILL, crash): a go-plugin server does not notice that
// its host is gone, and an orphaned modem plugin would keep the port open.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
