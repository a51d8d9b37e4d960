package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// maildir is the reference of the Maildir drain (contrib/bench/run 3b): the
// rate this machine's file system gives to delivery with the same durability,
// without a queue and its store. It writes -n files of -size bytes in batches
// of 64 as the queue's Maildir relay does (the Maildir protocol: written in
// tmp/, then renamed into new/): each created in tmp/ with O_EXCL, written,
// synced (16 at a time), closed, renamed into new/, and new/ synced once per
// batch; then it prints files_per_s.
func maildir(args []string) error {
	fs := flag.NewFlagSet("maildir", flag.ContinueOnError)
	dir := fs.String("dir", "", "the Maildir to create (must not exist)")
	n := fs.Int("n", 20000, "files to deliver")
	size := fs.Int("size", 1200, "bytes per file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *n < 1 || *size < 1 {
		return errors.New("maildir: want -dir, and -n and -size 1 or more")
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(*dir, sub), 0o700); err != nil {
			return err
		}
	}
	body := []byte(strings.Repeat(strings.Repeat("x", 71)+"\n", max(*size/72, 1)))
	const batch, syncs = 64, 16
	start := time.Now()
	for lo := 0; lo < *n; lo += batch {
		if err := maildirBatch(*dir, lo, min(lo+batch, *n), body, syncs); err != nil {
			return err
		}
	}
	el := time.Since(start)
	fmt.Printf("files=%d\nelapsed_s=%.3f\nfiles_per_s=%.1f\n", *n, el.Seconds(), float64(*n)/el.Seconds())
	return nil
}

// maildirBatch delivers files lo to hi-1: created and written, synced
// (syncs at a time) and closed, renamed, then new/ synced.
func maildirBatch(dir string, lo, hi int, body []byte, syncs int) error {
	files := make([]*os.File, 0, hi-lo)
	for i := lo; i < hi; i++ {
		f, err := os.OpenFile(filepath.Join(dir, "tmp", fmt.Sprint(i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		files = append(files, f)
		if _, err := f.Write(body); err != nil {
			return err
		}
	}
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, syncs)
	for k, f := range files {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[k] = errors.Join(f.Sync(), f.Close())
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i := lo; i < hi; i++ {
		if err := os.Rename(filepath.Join(dir, "tmp", fmt.Sprint(i)), filepath.Join(dir, "new", fmt.Sprint(i))); err != nil {
			return err
		}
	}
	d, err := os.Open(filepath.Join(dir, "new"))
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
