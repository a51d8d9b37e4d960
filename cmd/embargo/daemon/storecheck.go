package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/bits"
	"os"
)

// The pre-open check reads the store file with plain reads, before bbolt maps
// it. bbolt trusts the file: a page id past the end of a truncated file, or a
// key offset past its page, makes it read outside the mapping, and that is a
// SIGSEGV or SIGBUS the Go runtime cannot turn into an error (a damaged store
// then crashes every command instead of being refused; docs/threat-model.md
// A5). So every structure bbolt will dereference is bounds-checked here
// first: the file's size, both meta pages, the freelist, and every page and
// element reachable from the root. What stays inside the file but is wrong
// (key order, pages referenced twice, unreachable pages) is left to bbolt's
// own tx.Check, which then runs safely on the mapped file.
//
// The layout is bbolt's file format version 2 (go.etcd.io/bbolt
// internal/common: page.go, meta.go, bucket.go), in the host's byte order,
// which is the order bbolt writes.

const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	metaChecksumAt   = 56 // the meta's checksum is FNV-64a of its first 56 bytes
	noFreelist       = ^uint64(0)

	branchPage   = 0x01
	leafPage     = 0x02
	freelistPage = 0x10
	bucketLeaf   = 0x01

	// minPages: two meta pages, a freelist and a root leaf, as bbolt
	// creates a file.
	minPages = 4
	// maxDepth bounds the walk (a B+tree of a few levels, buckets nested a
	// few deep): a corrupt file cannot make it recurse without end.
	maxDepth = 256
)

var nativeEndian = binary.NativeEndian

// boltMeta is one decoded meta page.
type boltMeta struct {
	magic, version, pageSize          uint32
	root, freelist, pgid, txid, check uint64
	err                               error // why bbolt would reject it; nil if valid
}

func decodeMeta(b []byte) boltMeta {
	if len(b) < pageHeaderSize+metaChecksumAt+8 {
		return boltMeta{err: errors.New("cut short")}
	}
	m := b[pageHeaderSize:]
	bm := boltMeta{
		magic:    nativeEndian.Uint32(m[0:]),
		version:  nativeEndian.Uint32(m[4:]),
		pageSize: nativeEndian.Uint32(m[8:]),
		root:     nativeEndian.Uint64(m[16:]),
		freelist: nativeEndian.Uint64(m[32:]),
		pgid:     nativeEndian.Uint64(m[40:]),
		txid:     nativeEndian.Uint64(m[48:]),
		check:    nativeEndian.Uint64(m[56:]),
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksumAt])
	switch {
	case bm.magic != boltMagic:
		bm.err = errors.New("not a bbolt meta page")
	case bm.version != boltVersion:
		bm.err = fmt.Errorf("format version %d, not %d", bm.version, boltVersion)
	case bm.check != h.Sum64():
		bm.err = errors.New("checksum mismatch")
	}
	return bm
}

// storeDamage is why a store file cannot be opened. Its Error is a sentence
// for the operator; StoreError adds the restore steps.
type storeDamage struct{ reason string }

func (d *storeDamage) Error() string { return d.reason }

func damaged(format string, args ...any) error {
	return &storeDamage{fmt.Sprintf(format, args...)}
}

// precheck verifies the store file f of size bytes and returns warnings
// about damage bbolt works around (one broken meta page).
func precheck(f io.ReaderAt, size int64) (warnings []string, err error) {
	if size == 0 {
		return nil, damaged("it is empty (0 bytes)")
	}
	first := readAt(f, 0, min(size, 4096))
	m0 := decodeMeta(first)
	pageSize := int64(m0.pageSize)
	if m0.err != nil {
		// bbolt looks for the second meta page at the possible page sizes.
		pageSize = 0
		for ps := int64(1024); ps <= 1<<16 && ps+pageHeaderSize+64 <= size; ps <<= 1 {
			if m := decodeMeta(readAt(f, ps, 4096)); m.err == nil && int64(m.pageSize) == ps {
				pageSize = ps
				break
			}
		}
	}
	if pageSize == 0 {
		if m0.magic != boltMagic {
			return nil, damaged("it is not a bbolt database (no meta page at its start)")
		}
		m1 := decodeMeta(readAt(f, int64(m0.pageSize), 4096)) // where page 0 says page 1 is
		return nil, damaged("both meta pages are damaged (page 0: %v; page 1: %v)", m0.err, m1.err)
	}
	if pageSize < 1024 || pageSize > 1<<16 || bits.OnesCount64(uint64(pageSize)) != 1 {
		return nil, damaged("its meta page gives an impossible page size (%d)", pageSize)
	}
	if size%pageSize != 0 {
		return nil, damaged("it is %d bytes, not a whole number of %d-byte pages: it was cut short or written over", size, pageSize)
	}
	if size < minPages*pageSize {
		return nil, damaged("it is %d bytes, shorter than the %d pages of an empty store", size, minPages)
	}
	m0 = decodeMeta(readAt(f, 0, pageSize))
	m1 := decodeMeta(readAt(f, pageSize, pageSize))
	// bbolt uses the meta with the higher transaction id if it is valid,
	// else the other one (db.go, DB.meta).
	use, other, otherID := m0, m1, 1
	if m1.txid > m0.txid {
		use, other, otherID = m1, m0, 0
	}
	if use.err != nil {
		use, other, otherID = other, use, 1-otherID
	}
	switch {
	case use.err != nil:
		return nil, damaged("both meta pages are damaged (page 0: %v; page 1: %v)", m0.err, m1.err)
	case int64(use.pageSize) != pageSize:
		return nil, damaged("its meta pages disagree on the page size (%d, %d)", pageSize, use.pageSize)
	case other.err != nil:
		warnings = append(warnings, fmt.Sprintf("meta page %d is damaged (%v); bbolt uses meta page %d (transaction %d) and the next write repairs it. "+
			"If the damaged page held the last transaction, that last write is missing: compare with your latest backup",
			otherID, other.err, 1-otherID, use.txid))
	}
	hwm := use.pgid
	if hwm < minPages || hwm > uint64(size/pageSize) {
		return nil, damaged("it is %d bytes, but its last transaction reaches %d pages of %d bytes: it was cut short", size, hwm, pageSize)
	}
	w := &walker{f: f, pageSize: pageSize, hwm: hwm, seen: map[uint64]bool{0: true, 1: true}}
	if use.freelist != noFreelist {
		if err := w.freelist(use.freelist); err != nil {
			return warnings, err
		}
	}
	if err := w.page(use.root, "the root", 0); err != nil {
		return warnings, err
	}
	return warnings, nil
}

// readAt reads n bytes at off; what lies past the end of f reads as zeros
// (the callers have checked the size where it matters).
func readAt(f io.ReaderAt, off, n int64) []byte {
	b := make([]byte, n)
	f.ReadAt(b, off)
	return b
}

// walker visits the pages reachable from the root, once each.
type walker struct {
	f        io.ReaderAt
	pageSize int64
	hwm      uint64 // the meta's high-water mark: pages in use are below it
	seen     map[uint64]bool
}

// load reads page id with its overflow pages, checking that the run lies
// below the high-water mark, names itself, and was not seen before.
func (w *walker) load(id uint64, from string, flags ...uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, damaged("%s points to page %d, outside the store's %d pages", from, id, w.hwm)
	}
	b := readAt(w.f, int64(id)*w.pageSize, w.pageSize)
	self, fl, over := nativeEndian.Uint64(b), nativeEndian.Uint16(b[8:]), uint64(nativeEndian.Uint32(b[12:]))
	switch {
	case self != id:
		return nil, damaged("page %d calls itself page %d", id, self)
	case !isOneOf(fl, flags):
		return nil, damaged("page %d has type %#x where %s expects %v", id, fl, from, flags)
	case over >= w.hwm-id:
		return nil, damaged("page %d claims %d more pages, past the end of the store", id, over)
	}
	for p := id; p <= id+over; p++ {
		if w.seen[p] {
			return nil, damaged("page %d is used twice (again by %s)", p, from)
		}
		w.seen[p] = true
	}
	if over > 0 {
		b = readAt(w.f, int64(id)*w.pageSize, int64(over+1)*w.pageSize)
	}
	return b, nil
}

func isOneOf(v uint16, set []uint16) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

// freelist checks the free page list: every id a page of the store.
func (w *walker) freelist(id uint64) error {
	b, err := w.load(id, "the meta page's freelist", freelistPage)
	if err != nil {
		return err
	}
	start, count := uint64(pageHeaderSize), uint64(nativeEndian.Uint16(b[10:]))
	if count == 0xFFFF { // the real count is the first element
		count, start = nativeEndian.Uint64(b[start:]), start+8
	}
	if count > (uint64(len(b))-start)/8 {
		return damaged("the freelist (page %d) claims %d entries, more than it holds", id, count)
	}
	for i := range count {
		if p := nativeEndian.Uint64(b[start+8*i:]); p < 2 || p >= w.hwm {
			return damaged("the freelist (page %d) lists page %d, outside the store's %d pages", id, p, w.hwm)
		}
	}
	return nil
}

// page checks a branch or leaf page and everything below it.
func (w *walker) page(id uint64, from string, depth int) error {
	if depth > maxDepth {
		return damaged("%s nests deeper than %d levels", from, maxDepth)
	}
	b, err := w.load(id, from, branchPage, leafPage)
	if err != nil {
		return err
	}
	return w.elements(b, fmt.Sprintf("page %d", id), depth)
}

// elements checks the elements of the page image b (a page read from the
// file, or an inline bucket's page inside a value): each key and value lies
// inside b, and each child page or sub-bucket is checked in turn.
func (w *walker) elements(b []byte, where string, depth int) error {
	if len(b) < pageHeaderSize {
		return damaged("%s is shorter than a page header", where)
	}
	flags, count := nativeEndian.Uint16(b[8:]), uint64(nativeEndian.Uint16(b[10:]))
	if count > uint64(len(b)-pageHeaderSize)/elementSize {
		return damaged("%s claims %d elements, more than it holds", where, count)
	}
	for i := range count {
		e := b[pageHeaderSize+i*elementSize:]
		at := uint64(pageHeaderSize + i*elementSize)
		if flags == branchPage {
			pos, ksize := uint64(nativeEndian.Uint32(e[0:])), uint64(nativeEndian.Uint32(e[4:]))
			if at+pos+ksize > uint64(len(b)) {
				return damaged("%s: element %d's key lies outside the page", where, i)
			}
			if err := w.page(nativeEndian.Uint64(e[8:]), where, depth+1); err != nil {
				return err
			}
			continue
		}
		eflags := nativeEndian.Uint32(e[0:])
		pos, ksize, vsize := uint64(nativeEndian.Uint32(e[4:])), uint64(nativeEndian.Uint32(e[8:])), uint64(nativeEndian.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > uint64(len(b)) {
			return damaged("%s: element %d's key or value lies outside the page", where, i)
		}
		if eflags&bucketLeaf != 0 {
			if err := w.bucket(b[end-vsize:end], fmt.Sprintf("%s element %d", where, i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// bucket checks a bucket's header: its root page, or its inline page.
func (w *walker) bucket(v []byte, where string, depth int) error {
	if len(v) < bucketHeaderSize {
		return damaged("%s is a bucket too short for its header", where)
	}
	if depth > maxDepth {
		return damaged("%s nests deeper than %d levels", where, maxDepth)
	}
	root := nativeEndian.Uint64(v)
	if root != 0 {
		return w.page(root, where, depth)
	}
	inline := v[bucketHeaderSize:]
	if len(inline) < pageHeaderSize || nativeEndian.Uint16(inline[8:]) != leafPage {
		return damaged("%s is an inline bucket without a leaf page", where)
	}
	return w.elements(inline, where+" (inline)", depth)
}

// statStore describes what is at path before anything opens it: nothing
// (os.ErrNotExist), or a regular file with its size, refused when it is
// something else or readable by others.
func statStore(path string) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, lerr := os.Lstat(path); lerr == nil {
			return 0, damaged("it is a symbolic link to a file that does not exist")
		}
	}
	if err != nil {
		return 0, err
	}
	if fi.IsDir() {
		return 0, damaged("it is a directory, not a file")
	}
	if !fi.Mode().IsRegular() {
		return 0, damaged("it is not a regular file (%v)", fi.Mode().Type())
	}
	return fi.Size(), nil
}
