package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
)

// loadConfig reads --config. On failure it prints every problem and returns
// exitUsage as the second value (bad config is exit 2, DESIGN.md §10).
func (a *app) loadConfig() (*config.Config, int) {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		a.configError(err)
		return nil, exitUsage
	}
	return cfg, exitOK
}

// configError prints why the config did not load: its FILE:LINE: message
// lines, or, for a file that cannot be read at all, which file and how to
// name another one.
func (a *app) configError(err error) {
	var probs *config.Errors
	if errors.As(err, &probs) {
		fmt.Fprintln(a.stderr, err)
		return
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	fmt.Fprintf(a.stderr, "smsmilter: cannot read the config file %s: %v\nName the right one with --config FILE (default %s).\n", a.configPath, err, defaultConfigPath)
}

// openStore opens the store the config names; the daemon may have it open
// too (the store is safe for several processes).
func (a *app) openStore(cfg *config.Config) (store.Store, int) {
	st, err := sqlite.OpenDir(a.ctx, cfg.StateDir, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: cannot open the store in %s: %v\n", cfg.StateDir, err)
		return nil, exitFailed
	}
	return st, exitOK
}

// withStore loads the config, opens the store, runs f, and closes the store.
func (a *app) withStore(f func(cfg *config.Config, st store.Store) int) int {
	cfg, code := a.loadConfig()
	if cfg == nil {
		return code
	}
	st, code := a.openStore(cfg)
	if st == nil {
		return code
	}
	defer keepOwner(cfg.StateDir)
	defer st.Close()
	keepOwner(cfg.StateDir)
	return f(cfg, st)
}

// keepOwner gives the store files back to the state directory's owner. An
// admin running the CLI as root would otherwise leave root-owned files
// (the database, its -wal and -shm) that the daemon, running as its own
// user, can no longer write.
func keepOwner(dir string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return
	}
	for _, name := range []string{sqlite.FileName, sqlite.FileName + "-wal", sqlite.FileName + "-shm", sqlite.FileName + "-journal"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			os.Lchown(p, int(st.Uid), int(st.Gid))
		}
	}
}

// readFirstLine returns the first line of r without its line end (for
// passwords piped in: `printf '%s\n' pw | smsmilter mailbox passwd ...`).
func readFirstLine(r io.Reader) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, 4096))
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
