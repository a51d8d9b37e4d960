//go:build !linux

package queue

import "os"

// syncFS is nil where there is no syncfs(2): each file of a batch is synced
// on its own (Maildir.syncAll).
var syncFS func(tmp *os.File) error

// syncfsHonoured: without syncfs there is nothing to honour.
func syncfsHonoured(string) (bool, string) { return false, "" }
