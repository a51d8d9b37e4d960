package daemontest

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
)

// StoreCase is one way a store can be damaged (docs/threat-model.md A5) and
// what every opener of it must do: refuse with a sentence, or open.
type StoreCase struct {
	Name string
	// Break damages the store of the data directory dir, a copy of a good
	// store made with AddFiller, with its marker (daemon.CreatedFile).
	Break func(t testing.TB, dir string)
	// Refused is a phrase of the refusal, the same for every opener; ""
	// means the store opens.
	Refused string
	// Warn is a phrase of the warning logged when a damaged store opens.
	Warn string
	// ServeCreates: the daemon creates a store here, the other openers
	// refuse with Refused.
	ServeCreates bool
	// Filler is how many of AddFiller's keys the opened store holds, when
	// not FillerKeys.
	Filler int
}

// The sentences a refusal carries, whatever the damage.
const (
	SentenceDamaged = "failed its consistency check"
	SentenceGone    = "the store was here and is gone: restore it"
	SentenceRestore = "embargo restore BACKUP.db --data "
)

// StoreCases is the table of store damage: each case with its outcome.
func StoreCases() []StoreCase {
	return []StoreCase{
		{Name: "intact", Break: func(testing.TB, string) {}},
		{Name: "0 bytes", Refused: SentenceGone, Break: func(t testing.TB, dir string) { truncate(t, dir, 0) }},
		{Name: "0 bytes without the marker", Refused: "is empty (0 bytes)", Break: func(t testing.TB, dir string) {
			truncate(t, dir, 0)
			removeMarker(t, dir)
		}},
		{Name: "missing", Refused: SentenceGone, Break: func(t testing.TB, dir string) { remove(t, dir, daemon.DBFile) }},
		{Name: "missing, never created", Refused: "no store at", ServeCreates: true, Break: func(t testing.TB, dir string) {
			remove(t, dir, daemon.DBFile)
			removeMarker(t, dir)
		}},
		{Name: "truncated to half", Refused: "it was cut short", Break: func(t testing.TB, dir string) {
			ps, hwm := layout(t, dir) // half the pages in use
			truncate(t, dir, hwm/2*ps)
		}},
		{Name: "truncated by one page", Refused: "it was cut short", Break: func(t testing.TB, dir string) {
			// One page short of what the last transaction uses (bbolt grows
			// the file ahead of use: a shorter cut may lose only free space).
			ps, hwm := layout(t, dir)
			truncate(t, dir, (hwm-1)*ps)
		}},
		{Name: "unused tail cut off", Break: func(t testing.TB, dir string) {
			ps, hwm := layout(t, dir)
			truncate(t, dir, hwm*ps)
		}},
		{Name: "cut in mid-page", Refused: "not a whole number of", Break: func(t testing.TB, dir string) {
			truncate(t, dir, fileSize(t, dir)-100)
		}},
		{Name: "newest meta page broken", Warn: "is damaged", Filler: FillerKeys + 500, Break: func(t testing.TB, dir string) {
			breakMeta(t, dir, newestMeta(t, dir))
		}},
		{Name: "older meta page broken", Warn: "is damaged", Break: func(t testing.TB, dir string) {
			breakMeta(t, dir, 1-newestMeta(t, dir))
		}},
		{Name: "both meta pages broken", Refused: "both meta pages are damaged", Break: func(t testing.TB, dir string) {
			breakMeta(t, dir, 0)
			breakMeta(t, dir, 1)
		}},
		{Name: "flipped byte in a leaf page", Refused: "bbolt's check", Break: func(t testing.TB, dir string) {
			// The first key's first byte: the keys are then out of order,
			// which only bbolt's tx.Check sees.
			edit(t, dir, func(b []byte, ps int) {
				p := findPage(t, dir, "leaf") * ps
				e := p + 16
				b[e+int(u32(b[e+4:]))] ^= 0xff
			})
		}},
		{Name: "leaf element pointing past its page", Refused: "lies outside the page", Break: func(t testing.TB, dir string) {
			edit(t, dir, func(b []byte, ps int) {
				e := findPage(t, dir, "leaf")*ps + 16
				binary.NativeEndian.PutUint32(b[e+4:], 0x7fff0000) // pos
			})
		}},
		{Name: "branch pointing past the end", Refused: "outside the store", Break: func(t testing.TB, dir string) {
			_, hwm := layout(t, dir)
			edit(t, dir, func(b []byte, ps int) {
				e := findPage(t, dir, "branch")*ps + 16
				binary.NativeEndian.PutUint64(b[e+8:], uint64(hwm+1000)) // pgid
			})
		}},
		{Name: "root page id past the end", Refused: "outside the store", Break: func(t testing.TB, dir string) {
			_, hwm := layout(t, dir)
			setMeta(t, dir, newestMeta(t, dir), 16, uint64(hwm+3))
		}},
		{Name: "freelist page id past the end", Refused: "outside the store", Break: func(t testing.TB, dir string) {
			_, hwm := layout(t, dir)
			setMeta(t, dir, newestMeta(t, dir), 32, uint64(hwm+3))
		}},
		{Name: "freelist entry past the end", Refused: "the freelist", Break: func(t testing.TB, dir string) {
			_, hwm := layout(t, dir)
			free := metaField(t, dir, newestMeta(t, dir), 32)
			edit(t, dir, func(b []byte, ps int) {
				p := int(free) * ps
				if binary.NativeEndian.Uint16(b[p+10:]) == 0 {
					binary.NativeEndian.PutUint16(b[p+10:], 1)
				}
				binary.NativeEndian.PutUint64(b[p+16:], uint64(hwm+7))
			})
		}},
		{Name: "not bbolt at all", Refused: "not a bbolt database", Break: func(t testing.TB, dir string) {
			writeStore(t, dir, bytes.Repeat([]byte("this is not a database\n"), 2000))
		}},
		{Name: "a directory", Refused: "is a directory", Break: func(t testing.TB, dir string) {
			remove(t, dir, daemon.DBFile)
			if err := os.Mkdir(filepath.Join(dir, daemon.DBFile), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{Name: "world-readable", Refused: "chmod 600", Break: func(t testing.TB, dir string) {
			if err := os.Chmod(filepath.Join(dir, daemon.DBFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

// FillerKeys is how many keys AddFiller leaves in its bucket.
const FillerKeys = 2500

// AddFiller adds a bucket "filler" to the (closed) store file at path, big
// enough for branch pages, an overflow value, an inline sub-bucket and free
// pages, so that every kind of page can be damaged. embargo ignores it.
func AddFiller(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := func(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)) }
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("filler"))
		if err != nil {
			return err
		}
		for i := range FillerKeys + 500 {
			if err := b.Put(key(i), bytes.Repeat([]byte{byte(i)}, 64)); err != nil {
				return err
			}
		}
		sub, err := b.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		if err := sub.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return b.Put([]byte("big"), bytes.Repeat([]byte("x"), 20000))
	})
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error { // frees pages: a freelist with entries
			b := tx.Bucket([]byte("filler"))
			for i := FillerKeys; i < FillerKeys+500; i++ {
				if err := b.Delete(key(i)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// CountFiller counts AddFiller's keys in the store file at path.
func CountFiller(t testing.TB, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("filler"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) == 8 {
				n++
			}
			return nil
		})
	})
	return n
}

// CopyStoreDir copies the store and its marker from src to a new data
// directory, keeping modes.
func CopyStoreDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range []string{daemon.DBFile, daemon.CreatedFile} {
		if err := copySparse(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// copySparse copies the file src to dst (created 0600) through a small
// buffer, leaving each all-zero block a hole: a store holds a few hundred
// kilobytes in a file bbolt grew to 16 MB, and the damage cases copy it
// some two hundred times. Read back, dst holds the same bytes.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	buf, zero := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				out.Close()
				return err
			}
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func storePath(dir string) string { return filepath.Join(dir, daemon.DBFile) }

func fileSize(t testing.TB, dir string) int {
	t.Helper()
	fi, err := os.Stat(storePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Size())
}

func truncate(t testing.TB, dir string, size int) {
	t.Helper()
	if err := os.Truncate(storePath(dir), int64(size)); err != nil {
		t.Fatal(err)
	}
}

func remove(t testing.TB, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func removeMarker(t testing.TB, dir string) { remove(t, dir, daemon.CreatedFile) }

func writeStore(t testing.TB, dir string, b []byte) {
	t.Helper()
	if err := os.WriteFile(storePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// edit lets f change the pages in use (up to the newest meta's high-water
// mark, where every edit falls) and writes back the pages it changed: the
// unused tail of the file, most of it, is neither read nor written.
func edit(t testing.TB, dir string, f func(b []byte, pageSize int)) {
	t.Helper()
	ps, hwm := layout(t, dir)
	fh, err := os.OpenFile(storePath(dir), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, hwm*ps)
	if _, err := fh.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	was := bytes.Clone(b)
	f(b, ps)
	for p := 0; p < len(b); p += ps {
		if !bytes.Equal(b[p:p+ps], was[p:p+ps]) {
			if _, err := fh.WriteAt(b[p:p+ps], int64(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// inUse reads the pages in use of the store in dir.
func inUse(t testing.TB, dir string) []byte {
	t.Helper()
	ps, hwm := layout(t, dir)
	fh, err := os.Open(storePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, hwm*ps)
	if _, err := fh.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func u32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }

// layout is the page size and the newest meta's high-water mark (pages in
// use), read from the file (bbolt's format: meta at offset 16 of pages 0, 1).
func layout(t testing.TB, dir string) (pageSize, hwm int) {
	t.Helper()
	fh, err := os.Open(storePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var head [32]byte
	if _, err := fh.ReadAt(head[:], 0); err != nil {
		t.Fatal(err)
	}
	return int(u32(head[16+8:])), int(metaField(t, dir, newestMeta(t, dir), 40))
}

func newestMeta(t testing.TB, dir string) int {
	if metaField(t, dir, 1, 48) > metaField(t, dir, 0, 48) {
		return 1
	}
	return 0
}

// metaField reads the uint64 at offset off of meta page i, reading only the
// page size and the field.
func metaField(t testing.TB, dir string, i, off int) uint64 {
	t.Helper()
	fh, err := os.Open(storePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var head [32]byte
	if _, err := fh.ReadAt(head[:], 0); err != nil {
		t.Fatal(err)
	}
	ps := int(u32(head[16+8:]))
	var v [8]byte
	if _, err := fh.ReadAt(v[:], int64(i*ps+16+off)); err != nil {
		t.Fatal(err)
	}
	return binary.NativeEndian.Uint64(v[:])
}

// setMeta writes a uint64 field of meta page i and its checksum (FNV-64a of
// the meta's first 56 bytes): a meta bbolt accepts, pointing where we say.
func setMeta(t testing.TB, dir string, i, off int, v uint64) {
	t.Helper()
	edit(t, dir, func(b []byte, ps int) {
		m := b[i*ps+16:]
		binary.NativeEndian.PutUint64(m[off:], v)
		h := fnv.New64a()
		h.Write(m[:56])
		binary.NativeEndian.PutUint64(m[56:], h.Sum64())
	})
}

// breakMeta flips bytes of meta page i's transaction id: its checksum fails.
func breakMeta(t testing.TB, dir string, i int) {
	t.Helper()
	edit(t, dir, func(b []byte, ps int) { b[i*ps+16+48] ^= 0x5a })
}

// findPage is a page of type typ ("leaf", "branch") in use, with at least
// two elements whose keys start with a byte below 0x80.
func findPage(t testing.TB, dir, typ string) int {
	t.Helper()
	db, err := bolt.Open(storePath(dir), 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := inUse(t, dir)
	ps, _ := layout(t, dir)
	found := -1
	db.View(func(tx *bolt.Tx) error {
		for id := 2; found < 0; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			if p.Type == typ && p.Count >= 2 && smallKeys(b[id*ps:(id+1+p.OverflowCount)*ps], typ) {
				found = id
			}
			if p.Type != "free" {
				id += p.OverflowCount
			}
		}
		return nil
	})
	if found < 0 {
		t.Fatalf("no %s page in the store", typ)
	}
	return found
}

// smallKeys: the first two keys of page p start below 0x80, so that
// flipping the first byte of the first puts it after the second.
func smallKeys(p []byte, typ string) bool {
	posAt := 4 // leaf: flags, pos, ksize, vsize
	if typ == "branch" {
		posAt = 0 // branch: pos, ksize, pgid
	}
	for i := range 2 {
		e := 16 + 16*i
		if p[e+int(u32(p[e+posAt:]))] >= 0x80 {
			return false
		}
	}
	return true
}
