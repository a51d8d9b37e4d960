package message

// CleanLineEnds reports whether every CR in b is followed by LF and every LF
// preceded by CR: the only line end a message may have (RFC 5322 §2.3). The
// list daemons check what they render with it, so that no bare CR or LF
// reaches a relay (docs/threat-model.md B2).
func CleanLineEnds(b []byte) bool {
	for i, c := range b {
		switch c {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}
