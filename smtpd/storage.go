package smtpd

import "log/slog"

// storageOK reports whether the store's file system has room for a transaction
// whose client announced size bytes with SIZE= (0: not announced), by
// Options.FreeSpace; true when FreeSpace is not set.
//
// The rule is Postfix's (smtpd_check_size with queue_minfree): refuse when
// fewer than MinFreeBytes are free, or fewer than 1.5 × size, so that the
// message would not leave the file system nearly full. A client that sends
// more than it announced is still held to MaxMessageBytes, and a commit that
// finds the disk full still answers 451: this check only spares a client the
// transfer of a message that would fail.
//
// An error from FreeSpace accepts the MAIL (fails open): a file system whose
// free space cannot be read may still take the message, and refusing every
// MAIL on a statfs failure would stop all intake over a problem in the check
// itself, while the commit's own 451 protects the message either way.
func (s *Server) storageOK(log *slog.Logger, size int64) bool {
	if s.opts.FreeSpace == nil {
		return true
	}
	free, err := s.opts.FreeSpace()
	if err != nil {
		log.Warn("smtpd: free space unknown, MAIL accepted", "err", err)
		return true
	}
	reserve := uint64(max(s.opts.MinFreeBytes, 0))
	need := uint64(max(size, 0))
	need += need / 2 // 1.5 × SIZE; SIZE is at most MaxMessageBytes (go-smtp checks it first)
	if free >= reserve && free >= need {
		return true
	}
	log.Warn("smtpd: MAIL refused, insufficient storage", "free", free, "reserve", reserve, "size", size)
	return false
}
