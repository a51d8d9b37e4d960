//go:build !linux

package main

import "os"

// syncfs is nil where there is no syncfs(2): maildir -sync fs is refused.
var syncfs func(tmp *os.File) error
