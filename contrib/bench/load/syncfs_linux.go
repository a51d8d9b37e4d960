//go:build linux

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncfs is what the queue's Maildir relay does for a batch on Linux
// (cmd/embargo/daemon/queue/maildir_linux.go): syncfs(2) of the file system
// holding tmp, then an fsync of tmp, whose device cache flush follows the
// block device writes that syncfs ends with.
var syncfs = func(tmp *os.File) error {
	c, err := tmp.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return tmp.Sync()
}
