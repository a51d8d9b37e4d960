// Package powerfs is a FUSE file system for power-loss tests, in the manner
// of LazyFS: it keeps every write since the last fsync or fdatasync of a file
// in memory, serves reads (mmap reads too) from it, and on a power cut
// discards what was not synced. A kill -9 keeps the kernel's page cache, so it
// proves nothing about fsync; a cut of this file system does (docs/design.md
// §1, docs/threat-model.md A1).
//
// The "disk" is the Disk value in the test process: it outlives the mounts,
// so a test mounts it, runs a daemon on it, kills the daemon, cuts the power
// (Mount.Cut), and mounts what survived again. The model:
//
//   - A file's content survives as of its last fsync or fdatasync (the two are
//     the same here: the size is always persisted with the data).
//   - A name (create, mknod, mkdir, link, rename, unlink) survives as of the
//     last fsync of its directory, as POSIX requires and as a careful program
//     assumes; a journaling file system often persists more. A file whose
//     name survived but whose data was never synced comes back empty.
//   - Metadata other than names and sizes (mode, times) is kept at once.
//   - With a random source, a cut is torn: each page-sized (4 KiB) piece
//     written since the last sync is kept or dropped at random, with the
//     content last written there, and the size is the synced or the current
//     one, at random (LazyFS's "crash with torn writes"). The kernel writes
//     dirty pages back in any order, so this is what a disk may hold.
//
// Locks (flock, which bbolt takes) are the kernel's own: the file system does
// not ask for them, so the kernel keeps them locally.
//
// syncfs(2) never reaches a FUSE server (the kernel sends FUSE_SYNCFS only
// to virtiofs), so data made durable by syncfs alone is unsynced here, as
// it is on any FUSE file system in production: the Maildir relay sees the
// FUSE type and syncs each file instead (queue/maildir_linux.go,
// queue.TestMaildirPowerLoss, docs/threat-model.md A3).
package powerfs

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// PageSize is the unit of a torn write.
const PageSize = 4096

// Disk is the simulated storage: what was written, and what was synced.
type Disk struct {
	mu      sync.Mutex
	root    *node
	nextIno uint64
	gen     uint64 // the mount serving it; a node of an earlier mount answers EIO
	live    bool   // false between a cut and the next mount
	syncs   int

	ignoreSync bool
	capacity   int64         // in pages; 0: no limit (space.go)
	failAt     int           // the sync count at which the power fails; 0: never
	halted     chan struct{} // the power failed: operations wait on it until the cut
}

// IgnoreSync makes fsync and fdatasync succeed without persisting anything,
// from now on: a disk that lies about its write cache. A test sets it to show
// that its checks fail when durability is broken.
func (d *Disk) IgnoreSync(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ignoreSync = on
}

// node is a file, a directory or another inode (a socket).
type node struct {
	ino    uint64
	mode   uint32 // S_IFMT bits and permissions
	data   []byte // what reads see
	synced []byte // what survives a cut
	dirty  map[int64]bool
	// written counts the bytes written since the last sync.
	written int64
	// alloc holds the pages given to the file (space.go).
	alloc map[int64]bool

	kids, syncedKids map[string]*node // a directory's names
}

// New returns an empty disk whose root directory exists and is durable.
func New() *Disk {
	d := &Disk{nextIno: 2}
	d.root = &node{ino: 1, mode: syscall.S_IFDIR | 0o755, kids: map[string]*node{}, syncedKids: map[string]*node{}}
	return d
}

func (d *Disk) newNode(mode uint32) *node {
	n := &node{ino: d.nextIno, mode: mode}
	d.nextIno++
	if n.isDir() {
		n.kids, n.syncedKids = map[string]*node{}, map[string]*node{}
	}
	return n
}

func (n *node) isDir() bool { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }

func (n *node) isReg() bool { return n.mode&syscall.S_IFMT == syscall.S_IFREG }

// write stores p at off, as a write(2) to the page cache would.
func (n *node) write(p []byte, off int64) {
	if end := off + int64(len(p)); end > int64(len(n.data)) {
		n.resize(end)
	}
	copy(n.data[off:], p)
	n.markDirty(off, int64(len(p)))
	n.written += int64(len(p))
}

func (n *node) markDirty(off, size int64) {
	if n.dirty == nil {
		n.dirty = map[int64]bool{}
	}
	for pg := off / PageSize; pg*PageSize < off+size; pg++ {
		n.dirty[pg] = true
	}
}

// resize truncates or extends the file with zeros.
func (n *node) resize(size int64) {
	old := int64(len(n.data))
	switch {
	case size < old:
		n.data = n.data[:size]
	case size > old:
		if size <= int64(cap(n.data)) {
			n.data = n.data[:size]
			clear(n.data[old:])
		} else {
			grown := make([]byte, size, max(size, 2*int64(cap(n.data))))
			copy(grown, n.data)
			n.data = grown
		}
		n.markDirty(old, size-old)
	}
	if size != int64(len(n.synced)) && n.dirty == nil {
		n.dirty = map[int64]bool{}
	}
}

// sync makes the file's current content what survives a cut.
func (d *Disk) sync(n *node) syscall.Errno {
	if d.failAt > 0 && d.syncs+1 >= d.failAt {
		d.failAt = 0 // the power fails before this sync
		d.halted = make(chan struct{})
		return syscall.EIO
	}
	d.syncs++
	if d.ignoreSync {
		return 0
	}
	if n.isDir() {
		n.syncedKids = maps.Clone(n.kids)
		return 0
	}
	n.synced = append(n.synced[:0:0], n.data...)
	n.dirty, n.written = nil, 0
	return 0
}

// FailAtSync makes the power fail at the n-th fsync or fdatasync from now
// (n ≥ 1): that call persists nothing, and neither it nor any later
// operation returns until the cut, which answers them EIO. The machine
// stopped between two steps of the program's durability protocol (a bbolt
// commit writes its pages, syncs, writes its meta page, syncs), and nothing
// it does after that step reaches the disk: Cut then discards what it wrote
// since its last sync.
func (d *Disk) FailAtSync(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failAt = d.syncs + n
}

// Failed reports whether the power failed (FailAtSync) or was cut.
func (d *Disk) Failed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.live || d.halted != nil
}

// resume answers the operations waiting since the power failed.
func (d *Disk) resume() {
	if d.halted != nil {
		close(d.halted)
		d.halted = nil
	}
}

// CutReport says what one power cut discarded.
type CutReport struct {
	Files        int      // regular files reachable before the cut
	DirtyFiles   int      // those with data written since their last sync
	Unsynced     int64    // bytes written since the files' last syncs
	DroppedPages int      // page-sized pieces written and not kept
	TornPages    int      // written, not synced, and kept by a torn cut
	LostNames    []string // names made, changed or removed since their directory's last sync
	DirtyNames   []string // files with data written since their last sync (a name each)
	Syncs        int      // fsync and fdatasync calls since the disk was made
}

// cut discards everything not synced: the power is gone. With rng, a
// random part of the unsynced pages is kept (torn writes).
func (d *Disk) cut(rng *rand.Rand) CutReport {
	r := CutReport{Syncs: d.syncs}
	seen := map[*node]bool{}
	var before func(n *node, path string)
	before = func(n *node, path string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if n.isReg() {
			r.Files++
			if n.dirty != nil {
				r.DirtyFiles++
				r.DirtyNames = append(r.DirtyNames, strings.TrimSuffix(path, "/"))
				r.Unsynced += n.written
			}
		}
		for name, k := range n.kids {
			if n.syncedKids[name] != k {
				r.LostNames = append(r.LostNames, path+name)
			}
			before(k, path+name+"/")
		}
		for name := range n.syncedKids {
			if _, ok := n.kids[name]; !ok {
				r.LostNames = append(r.LostNames, path+name) // removed, and back after the cut
			}
		}
	}
	before(d.root, "")
	slices.Sort(r.LostNames)

	done := map[*node]bool{}
	var after func(n *node)
	after = func(n *node) {
		if done[n] {
			return
		}
		done[n] = true
		if n.isDir() {
			n.kids = maps.Clone(n.syncedKids)
			for _, k := range n.kids {
				after(k)
			}
			return
		}
		if rng != nil && n.dirty != nil {
			r.tear(n, rng)
		} else {
			r.DroppedPages += len(n.dirty)
		}
		n.data = append(n.data[:0:0], n.synced...)
		n.dirty, n.written = nil, 0
		n.reallocate()
	}
	after(d.root)
	return r
}

// tear keeps a random part of n's unsynced pages in its synced content.
func (r *CutReport) tear(n *node, rng *rand.Rand) {
	size := int64(len(n.synced))
	if rng.IntN(2) == 0 {
		size = int64(len(n.data))
	}
	kept := make([]byte, size)
	copy(kept, n.synced)
	for pg := range n.dirty {
		lo := pg * PageSize
		if lo >= size || lo >= int64(len(n.data)) || rng.IntN(2) == 0 {
			r.DroppedPages++
			continue
		}
		r.TornPages++
		copy(kept[lo:min(lo+PageSize, size)], n.data[lo:min(lo+PageSize, int64(len(n.data)))])
	}
	n.synced = kept
}
