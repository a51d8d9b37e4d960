package queue

import (
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/chunk"
)

// errBodyMissing means a row's stored body is gone: the store was damaged,
// or the row was dropped while it was being delivered.
var errBodyMissing = errors.New("queue: the row's stored body is missing")

// message makes what the relay gets for a claimed row: its Data, Data
// followed by its body, or what the Sealer makes of its spec and body. No
// transaction is open while the Sealer works; the body is read a chunk at a
// time, each in a short View of its own.
func (w *Worker) message(r *Row) ([]byte, error) {
	if r.blob == nil {
		return r.Data, nil
	}
	body := &bodyReader{db: w.db, key: r.blob, size: r.BodySize}
	if r.Seal == nil {
		data := make([]byte, len(r.Data), len(r.Data)+r.BodySize)
		copy(data, r.Data)
		for {
			if err := body.next(); err == io.EOF {
				return data, nil
			} else if err != nil {
				return nil, err
			}
			data = append(data, body.buf...)
			body.buf = nil
		}
	}
	if w.opts.Sealer == nil {
		return nil, Permanent(ErrNoSealer)
	}
	return w.seal(r, body)
}

// seal calls the Sealer, turning a panic into a temporary error (as send
// does for the relay: docs/threat-model.md A6).
func (w *Worker) seal(r *Row, body io.Reader) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			data, err = nil, fmt.Errorf("queue: sealer panicked: %v", p)
		}
	}()
	return w.opts.Sealer.Seal(r, body)
}

// bodyReader reads a stored body chunk by chunk. Each chunk is copied out of
// its own View: no transaction stays open while the reader's caller works,
// and the body is never whole in memory. The rows that use the body keep it
// stored; a row dropped meanwhile may take it away (errBodyMissing).
type bodyReader struct {
	db      *bolt.DB
	key     []byte
	size    int    // the stored length, to tell the end from a missing chunk
	read    int    // bytes fetched so far
	i       int    // the next chunk
	buf     []byte // what is left of the current chunk
	scratch []byte
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if len(b.buf) == 0 {
		if err := b.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// next fetches the next chunk into buf, or returns io.EOF after the last.
func (b *bodyReader) next() error {
	if b.read >= b.size {
		return io.EOF
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBlobs)
		if bk == nil {
			return ErrNoInit
		}
		c := chunk.Get(bk, b.key, b.i)
		if len(c) == 0 {
			return Permanent(errBodyMissing)
		}
		b.scratch = append(b.scratch[:0], c...)
		return nil
	})
	if err != nil {
		return err
	}
	b.i++
	b.read += len(b.scratch)
	b.buf = b.scratch
	return nil
}
