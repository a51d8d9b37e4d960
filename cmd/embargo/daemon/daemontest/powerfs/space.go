package powerfs

import "syscall"

// A disk with a capacity (SetCapacity) is full when its files' allocated
// pages fill it: a write, fallocate or link that needs a page more than is
// free fails with ENOSPC, and statfs reports the real free space, so that
// a test fills the disk by writing to it, as a full disk is filled, and the
// daemon's free-space check sees what the commit will meet
// (docs/threat-model.md A7).
//
// Files are sparse, as on ext4 or XFS: a page is allocated when it is first
// written (or fallocated), not when ftruncate extends the file. bbolt grows
// its file with ftruncate and then writes into it, so a full disk fails its
// commit at the write, as a real one does.

// SetCapacity sets the disk's size in bytes (rounded down to pages); 0: no
// limit (statfs reports plenty of room). Raising it frees space at once.
func (d *Disk) SetCapacity(bytes int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.capacity = bytes / PageSize
}

// Used returns the bytes allocated by the disk's files (whole pages).
func (d *Disk) Used() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.usedPages() * PageSize
}

// usedPages counts the pages allocated by the files reachable from the root
// (a file with two names once). A file unlinked while open frees its pages
// at once, not at its last close: the daemon does not rely on either.
func (d *Disk) usedPages() int64 {
	seen := map[*node]bool{}
	var walk func(n *node) int64
	walk = func(n *node) int64 {
		if seen[n] {
			return 0
		}
		seen[n] = true
		used := int64(len(n.alloc))
		for _, k := range n.kids {
			used += walk(k)
		}
		return used
	}
	return walk(d.root)
}

// reserve allocates n's pages in [off, off+size), or answers ENOSPC and
// allocates none if the disk has too few free.
func (d *Disk) reserve(n *node, off, size int64) syscall.Errno {
	if size <= 0 {
		return 0
	}
	var need []int64
	for pg := off / PageSize; pg*PageSize < off+size; pg++ {
		if !n.alloc[pg] {
			need = append(need, pg)
		}
	}
	if len(need) == 0 {
		return 0
	}
	if d.capacity > 0 && d.usedPages()+int64(len(need)) > d.capacity {
		return syscall.ENOSPC
	}
	if n.alloc == nil {
		n.alloc = map[int64]bool{}
	}
	for _, pg := range need {
		n.alloc[pg] = true
	}
	return 0
}

// trim frees n's pages past size (ftruncate down, O_TRUNC).
func (n *node) trim(size int64) {
	for pg := range n.alloc {
		if pg*PageSize >= size {
			delete(n.alloc, pg)
		}
	}
}

// reallocate keeps, after a cut, the pages n had allocated that lie within
// the size that survived.
func (n *node) reallocate() {
	n.trim(int64(len(n.data)))
}

// free is the statfs answer: blocks in all, and free, in pages.
func (d *Disk) free() (blocks, free uint64) {
	if d.capacity == 0 {
		return 1 << 24, 1 << 23
	}
	used := d.usedPages()
	if used >= d.capacity {
		return uint64(d.capacity), 0
	}
	return uint64(d.capacity), uint64(d.capacity - used)
}
