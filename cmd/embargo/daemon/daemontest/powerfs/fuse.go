package powerfs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Available says why this machine cannot mount the file system, or nil: it
// needs /dev/fuse and root (mount(2) is called directly, no fusermount).
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("powerfs mounts with mount(2), which needs root")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("powerfs needs /dev/fuse: %w", err)
	}
	f.Close()
	return nil
}

// Mount is the disk served at a directory.
type Mount struct {
	d   *Disk
	dir string
	srv *fuse.Server
}

// Mount serves the disk's current content at dir, an empty directory.
func (d *Disk) Mount(dir string) (*Mount, error) {
	d.mu.Lock()
	d.gen++
	d.live = true
	root := &fnode{d: d, n: d.root, gen: d.gen}
	d.mu.Unlock()
	// The kernel caches names and attributes: every change goes through it.
	ttl := 10 * time.Second
	srv, err := fs.Mount(dir, root, &fs.Options{
		EntryTimeout: &ttl,
		AttrTimeout:  &ttl,
		MountOptions: fuse.MountOptions{
			// mount(2) itself: no fusermount (package fuse3) needed as root.
			DirectMountStrict: true,
			FsName:            "powerfs",
			Name:              "powerfs",
			// No writeback cache: a write(2) returns once the data is in
			// the Disk, so a killed process leaves nothing in the kernel.
		},
		RootStableAttr: &fs.StableAttr{Ino: d.root.ino},
	})
	if err != nil {
		return nil, fmt.Errorf("mount powerfs at %s: %w", dir, err)
	}
	return &Mount{d: d, dir: dir, srv: srv}, nil
}

// Cut is the power failure: from now on the mount answers EIO, what was not
// synced is gone (or, with rng, partly kept: torn writes), and the mount is
// taken down, with the kernel's cache of it. Kill the processes that use it
// first. Mount the Disk again to see what survived.
func (m *Mount) Cut(rng *rand.Rand) (CutReport, error) {
	m.d.mu.Lock()
	m.d.live, m.d.failAt = false, 0
	m.d.resume()
	r := m.d.cut(rng)
	m.d.mu.Unlock()
	return r, m.unmount()
}

// Unmount takes the mount down cleanly: nothing is lost (a clean shutdown
// syncs everything, as the kernel's writeback would).
func (m *Mount) Unmount() error {
	m.d.mu.Lock()
	m.d.live = false
	m.d.resume()
	m.d.mu.Unlock()
	return m.unmount()
}

func (m *Mount) unmount() error {
	if err := m.srv.Unmount(); err != nil {
		// Busy (a process still holds a file): detach it, so that no new
		// access reaches this mount. The server serves the files still
		// open (their nodes answer EIO: an earlier mount's) until they
		// are closed; it is not waited for.
		return syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
	m.srv.Wait()
	return nil
}

// Syncs returns how many fsync and fdatasync calls the disk has had.
func (d *Disk) Syncs() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncs
}

// fnode is one inode of one mount.
type fnode struct {
	fs.Inode
	d   *Disk
	n   *node
	gen uint64
}

var (
	_ fs.NodeLookuper   = (*fnode)(nil)
	_ fs.NodeGetattrer  = (*fnode)(nil)
	_ fs.NodeSetattrer  = (*fnode)(nil)
	_ fs.NodeOpener     = (*fnode)(nil)
	_ fs.NodeCreater    = (*fnode)(nil)
	_ fs.NodeReader     = (*fnode)(nil)
	_ fs.NodeWriter     = (*fnode)(nil)
	_ fs.NodeFsyncer    = (*fnode)(nil)
	_ fs.NodeFlusher    = (*fnode)(nil)
	_ fs.NodeAllocater  = (*fnode)(nil)
	_ fs.NodeMkdirer    = (*fnode)(nil)
	_ fs.NodeMknoder    = (*fnode)(nil)
	_ fs.NodeLinker     = (*fnode)(nil)
	_ fs.NodeUnlinker   = (*fnode)(nil)
	_ fs.NodeRmdirer    = (*fnode)(nil)
	_ fs.NodeRenamer    = (*fnode)(nil)
	_ fs.NodeReaddirer  = (*fnode)(nil)
	_ fs.NodeStatfser   = (*fnode)(nil)
	_ fs.NodeOpendirer  = (*fnode)(nil)
	_ fs.NodeReleaser   = (*fnode)(nil)
	_ fs.NodeGetxattrer = (*fnode)(nil)
)

// lock takes the disk's lock, or answers EIO after a cut; after a power
// failure it waits for the cut first.
func (f *fnode) lock() syscall.Errno {
	f.d.mu.Lock()
	if h := f.d.halted; h != nil {
		f.d.mu.Unlock()
		<-h
		return syscall.EIO
	}
	if !f.d.live || f.gen != f.d.gen {
		f.d.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

func (f *fnode) unlock() { f.d.mu.Unlock() }

func fill(n *node, a *fuse.Attr) {
	a.Ino = n.ino
	a.Mode = n.mode
	a.Size = uint64(len(n.data))
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = PageSize
	a.Nlink = 1
	if n.isDir() {
		a.Nlink = 2
	}
}

// child makes the inode of n, a child of f; the caller holds no lock.
func (f *fnode) child(ctx context.Context, n *node) *fs.Inode {
	return f.NewInode(ctx, &fnode{d: f.d, n: n, gen: f.gen}, fs.StableAttr{Mode: n.mode & syscall.S_IFMT, Ino: n.ino})
}

func (f *fnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return nil, e
	}
	n := f.n.kids[name]
	if n != nil {
		fill(n, &out.Attr)
	}
	f.unlock()
	if n == nil {
		return nil, syscall.ENOENT
	}
	return f.child(ctx, n), 0
}

func (f *fnode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	fill(f.n, &out.Attr)
	return 0
}

func (f *fnode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	if size, ok := in.GetSize(); ok {
		if !f.n.isReg() {
			return syscall.EINVAL
		}
		f.n.resize(int64(size))
		f.n.trim(int64(size))
	}
	if mode, ok := in.GetMode(); ok {
		f.n.mode = f.n.mode&syscall.S_IFMT | mode&0o7777
	}
	fill(f.n, &out.Attr)
	return 0
}

func (f *fnode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return nil, 0, e
	}
	defer f.unlock()
	if flags&syscall.O_TRUNC != 0 && f.n.isReg() {
		f.n.resize(0)
		f.n.trim(0)
	}
	return nil, 0, 0
}

func (f *fnode) Opendir(ctx context.Context) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	f.unlock()
	return 0
}

// add links a new node under name, replacing nothing.
func (f *fnode) add(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return nil, e
	}
	if _, ok := f.n.kids[name]; ok {
		f.unlock()
		return nil, syscall.EEXIST
	}
	n := f.d.newNode(mode)
	f.n.kids[name] = n
	fill(n, &out.Attr)
	f.unlock()
	return f.child(ctx, n), 0
}

func (f *fnode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, e := f.add(ctx, name, syscall.S_IFREG|mode&0o7777, out)
	return ch, nil, 0, e
}

func (f *fnode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return f.add(ctx, name, syscall.S_IFDIR|mode&0o7777, out)
}

// Mknod makes the control socket (net.Listen "unix").
func (f *fnode) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return f.add(ctx, name, mode, out)
}

func (f *fnode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*fnode)
	if !ok {
		return nil, syscall.EXDEV
	}
	if e := f.lock(); e != 0 {
		return nil, e
	}
	if _, ok := f.n.kids[name]; ok {
		f.unlock()
		return nil, syscall.EEXIST
	}
	f.n.kids[name] = t.n
	fill(t.n, &out.Attr)
	f.unlock()
	return f.child(ctx, t.n), 0
}

func (f *fnode) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	n, ok := f.n.kids[name]
	switch {
	case !ok:
		return syscall.ENOENT
	case n.isDir():
		return syscall.EISDIR
	}
	delete(f.n.kids, name)
	return 0
}

func (f *fnode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	n, ok := f.n.kids[name]
	switch {
	case !ok:
		return syscall.ENOENT
	case !n.isDir():
		return syscall.ENOTDIR
	case len(n.kids) > 0:
		return syscall.ENOTEMPTY
	}
	delete(f.n.kids, name)
	return 0
}

// renameNoreplace is RENAME_NOREPLACE of renameat2(2).
const renameNoreplace = 1

func (f *fnode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	p, ok := newParent.(*fnode)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^renameNoreplace != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, RENAME_WHITEOUT: not used
	}
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	n, ok := f.n.kids[name]
	if !ok {
		return syscall.ENOENT
	}
	if old, ok := p.n.kids[newName]; ok {
		switch {
		case flags&renameNoreplace != 0:
			return syscall.EEXIST
		case old.isDir() && len(old.kids) > 0:
			return syscall.ENOTEMPTY
		case old.isDir() != n.isDir():
			return syscall.EISDIR
		}
	}
	delete(f.n.kids, name)
	p.n.kids[newName] = n
	return 0
}

func (f *fnode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return nil, e
	}
	defer f.unlock()
	list := make([]fuse.DirEntry, 0, len(f.n.kids))
	for name, n := range f.n.kids {
		list = append(list, fuse.DirEntry{Name: name, Mode: n.mode, Ino: n.ino})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return fs.NewListDirStream(list), 0
}

func (f *fnode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return nil, e
	}
	defer f.unlock()
	if off >= int64(len(f.n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, f.n.data[off:])
	return fuse.ReadResultData(dest[:k]), 0
}

func (f *fnode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if e := f.lock(); e != 0 {
		return 0, e
	}
	defer f.unlock()
	if e := f.d.reserve(f.n, off, int64(len(data))); e != 0 {
		return 0, e // a full disk (space.go)
	}
	f.n.write(data, off)
	return uint32(len(data)), 0
}

// Fsync is fsync and fdatasync of a file, and fsync of a directory.
func (f *fnode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	e := f.d.sync(f.n)
	h := f.d.halted
	f.unlock()
	if h != nil {
		<-h // the power failed at this sync
	}
	return e
}

func (f *fnode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

func (f *fnode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// fallocKeepSize is FALLOC_FL_KEEP_SIZE of fallocate(2).
const fallocKeepSize = 1

func (f *fnode) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	defer f.unlock()
	if e := f.d.reserve(f.n, int64(off), int64(size)); e != 0 {
		return e
	}
	if end := int64(off + size); mode&fallocKeepSize == 0 && end > int64(len(f.n.data)) {
		f.n.resize(end)
	}
	return 0
}

// Getxattr: no extended attributes (the kernel asks for security.capability
// at each write).
func (f *fnode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

// Statfs reports the free space of a disk with a capacity, and plenty of
// room without one (the daemon refuses mail below smtp.min_free_bytes).
func (f *fnode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if e := f.lock(); e != 0 {
		return e
	}
	blocks, free := f.d.free()
	f.unlock()
	out.Bsize, out.Frsize, out.NameLen = PageSize, PageSize, 255
	out.Blocks, out.Bfree, out.Bavail = blocks, free, free
	out.Files, out.Ffree = 1<<20, 1<<19
	return 0
}

// KillAndCut kills cmd's process with SIGKILL, then cuts the power (Cut,
// torn as rng says), and returns once the process has exited. A thread of
// the process waiting in an fsync that the failed disk never answers
// (FailAtSync) cannot die before the cut answers it: a FUSE request, once
// read by the server, waits for its answer whatever the signal. So the cut
// comes after the process exited or after 300 ms, whichever is first (a
// killed process that is not held so exits within milliseconds).
// cmd.Wait is called here.
func (m *Mount) KillAndCut(cmd *exec.Cmd, rng *rand.Rand) (CutReport, error) {
	cmd.Process.Signal(syscall.SIGKILL)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(300 * time.Millisecond):
	}
	r, err := m.Cut(rng)
	<-exited
	return r, err
}
