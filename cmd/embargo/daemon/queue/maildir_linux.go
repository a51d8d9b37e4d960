//go:build linux

package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes the files written in the file system of tmp durable at once:
// syncfs(2) writes back and waits for every dirty file and the metadata, as
// fsync on each would, for one device cache flush instead of one per file.
// Since Linux 5.8 it also returns any writeback error of the file system
// since tmp was opened, which is why openTmp opens it before the batch's
// files are written.
//
// syncfs flushes the device cache before it writes the last of the block
// device's buffers (sync_filesystem: ->sync_fs, then sync_blockdev), where
// a file system without a journal (such as ext4 made without one) keeps
// inodes and block bitmaps. The fsync of tmp/ that follows flushes the cache
// again, after those writes have completed, so that the files are on stable
// storage before the first rename into new/ (the Maildir protocol's order).
func syncFS(tmp *os.File) error {
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
