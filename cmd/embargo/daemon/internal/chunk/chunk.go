// Package chunk stores large values in a bbolt bucket as a run of fixed-size
// chunks under one key prefix.
//
// bbolt writes a whole leaf page whenever one of its keys changes, and a leaf
// holds at least two and up to four values however large they are (a node is
// split only from five entries up). One 10 MB value beside others therefore
// makes every later write to that leaf rewrite tens of megabytes, and the
// pages freed by each rewrite grow the file. As chunks, a large value shares
// a leaf with at most a few other chunks: a neighbour's write rewrites some
// hundred kilobytes, and a reader can copy it out a chunk at a time.
package chunk

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Size is the length of every chunk but the last.
const Size = 64 << 10

// Key is the key of chunk i under prefix.
func Key(prefix []byte, i int) []byte {
	k := make([]byte, len(prefix)+4)
	copy(k, prefix)
	binary.BigEndian.PutUint32(k[len(prefix):], uint32(i))
	return k
}

// Put stores v under prefix, replacing nothing: the caller gives a prefix
// that holds no chunks. An empty v is one empty chunk, so that Exists tells
// it from a missing one.
//
// bbolt keeps the slices it is given until the transaction ends, and v is
// not copied (a copy of a 10 MB value would double what the transaction
// holds): the caller must not change v before then.
func Put(b *bolt.Bucket, prefix, v []byte) error {
	for i := 0; i == 0 || i*Size < len(v); i++ {
		end := min((i+1)*Size, len(v))
		// The full slice expression keeps bbolt from seeing past the chunk.
		if err := b.Put(Key(prefix, i), v[i*Size:end:end]); err != nil {
			return fmt.Errorf("chunk: put %x/%d: %w", prefix, i, err)
		}
	}
	return nil
}

// Get returns chunk i of the value under prefix, or nil past its end. The
// slice is valid only inside the transaction.
func Get(b *bolt.Bucket, prefix []byte, i int) []byte {
	return b.Get(Key(prefix, i))
}

// Exists reports whether a value is stored under prefix.
func Exists(b *bolt.Bucket, prefix []byte) bool {
	return b.Get(Key(prefix, 0)) != nil
}

// Read returns a copy of the whole value under prefix, and false if there is
// none. It measures the value first so that the copy is one allocation of
// the exact size.
func Read(b *bolt.Bucket, prefix []byte) ([]byte, bool) {
	if !Exists(b, prefix) {
		return nil, false
	}
	n := 0
	for i := 0; ; i++ {
		c := Get(b, prefix, i)
		if c == nil {
			break
		}
		n += len(c)
	}
	out := make([]byte, 0, n)
	for i := 0; len(out) < n; i++ {
		out = append(out, Get(b, prefix, i)...)
	}
	return out, true
}

// Delete removes the value under prefix, chunk by chunk.
func Delete(b *bolt.Bucket, prefix []byte) error {
	for i := 0; ; i++ {
		k := Key(prefix, i)
		if b.Get(k) == nil {
			return nil
		}
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("chunk: delete %x/%d: %w", prefix, i, err)
		}
	}
}
