//go:build linux

package queue

import (
	"fmt"
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

// Magic numbers of statfs(2)'s f_type (linux/magic.h, fs/smb/client).
const (
	fuseSuperMagic = 0x65735546 // fuse and fuseblk
	cifsSuperMagic = 0xFF534D42
	smb2SuperMagic = 0xFE534D42
)

// syncfsHonoured reports whether syncfs(2) makes the files written on the
// file system holding dir durable, with that file system's type for the
// log. Not where it is known not to:
//
//   - FUSE: the kernel sends FUSE_SYNCFS only to servers that set sync_fs,
//     which only virtiofs does (fs/fuse/virtio_fs.c); for any other server
//     (sshfs, rclone, s3fs, ntfs-3g, go-fuse's) syncfs writes the dirty
//     pages to the server and returns without asking it to sync them,
//     while fsync sends FUSE_FSYNC. Checked on Linux 6.18 with a go-fuse
//     server: syncfs reached it with no request at all (powerfs, the test
//     harness, lost every batch at a cut).
//   - SMB/CIFS: the client has no sync_fs; writing back its pages sends
//     SMB2 WRITEs, which a server may cache, and only fsync sends the
//     SMB2 FLUSH that makes them durable on the server.
//
// virtiofs, which has the FUSE magic too, loses the fast path, never
// durability. A statfs that fails says nothing: each file is synced.
func syncfsHonoured(dir string) (bool, string) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, "unknown (statfs: " + err.Error() + ")"
	}
	switch t := uint32(st.Type); t {
	case fuseSuperMagic:
		return false, "fuse"
	case cifsSuperMagic, smb2SuperMagic:
		return false, "smb"
	default:
		return true, fmt.Sprintf("%#x", t)
	}
}
