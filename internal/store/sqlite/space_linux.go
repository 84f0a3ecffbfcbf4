//go:build linux

package sqlite

import "syscall"

// freeBytes reports the space left for unprivileged writers on the
// filesystem holding path (the daemon runs as its own user, so root's
// reserved blocks do not count).
func freeBytes(path string) (free uint64, known bool, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false, err
	}
	return st.Bavail * uint64(st.Bsize), true, nil
}
