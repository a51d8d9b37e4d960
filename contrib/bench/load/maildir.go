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
// closed and made durable, renamed into new/, and new/ synced once per batch;
// then it prints files_per_s. -sync says how the files are made durable
// before the renames:
//
//	fs    one syncfs(2) of the file system and an fsync of tmp/ per batch of
//	      3 files or more (smaller ones as with file), the relay's way on
//	      Linux (cmd/embargo/daemon/queue/maildir_linux.go), and the default
//	      there
//	file  each file synced before it is closed, 16 at a time, the relay's
//	      way elsewhere, and the default there
func maildir(args []string) error {
	fs := flag.NewFlagSet("maildir", flag.ContinueOnError)
	dir := fs.String("dir", "", "the Maildir to create (must not exist)")
	n := fs.Int("n", 20000, "files to deliver")
	size := fs.Int("size", 1200, "bytes per file")
	def := "file"
	if syncfs != nil {
		def = "fs"
	}
	mode := fs.String("sync", def, "how files are made durable: fs (one syncfs per batch) or file (each file synced)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *n < 1 || *size < 1 {
		return errors.New("maildir: want -dir, and -n and -size 1 or more")
	}
	if *mode != "fs" && *mode != "file" {
		return fmt.Errorf("maildir: -sync %q: want fs or file", *mode)
	}
	if *mode == "fs" && syncfs == nil {
		return errors.New("maildir: -sync fs: no syncfs(2) on this system")
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
		if err := maildirBatch(*dir, lo, min(lo+batch, *n), body, syncs, *mode == "fs"); err != nil {
			return err
		}
	}
	el := time.Since(start)
	fmt.Printf("sync=%s\nfiles=%d\nelapsed_s=%.3f\nfiles_per_s=%.1f\n", *mode, *n, el.Seconds(), float64(*n)/el.Seconds())
	return nil
}

// maildirBatch delivers files lo to hi-1: created and written, made
// durable (with one syncfs if useFS and there are 3 files or more, else
// each synced, syncs at a time) and closed, renamed, then new/ synced.
func maildirBatch(dir string, lo, hi int, body []byte, syncs int, useFS bool) error {
	var tmp *os.File
	if useFS && hi-lo >= 3 {
		// Opened before the writes: syncfs reports the writeback errors
		// since its descriptor was opened.
		var err error
		if tmp, err = os.Open(filepath.Join(dir, "tmp")); err != nil {
			return err
		}
		defer tmp.Close()
	}
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
	if tmp != nil {
		errs := make([]error, 0, len(files))
		for _, f := range files {
			errs = append(errs, f.Close())
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if err := syncfs(tmp); err != nil {
			return err
		}
	} else if err := syncEach(files, syncs); err != nil {
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

// syncEach syncs and closes files, syncs at a time.
func syncEach(files []*os.File, syncs int) error {
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
	return errors.Join(errs...)
}
