package message

import "strings"

// StripComments removes RFC 5322 comments (§3.2.2: nested parentheses,
// with quoted-pairs) outside quoted strings, leaving one space for each,
// so that a structured field such as Authentication-Results (RFC 8601 §2.2)
// can be read by a parser that does not know comments. Quoted strings and
// their quoted-pairs are kept as written.
func StripComments(s string) string {
	var b strings.Builder
	depth, quoted, escaped := 0, false, false
	for _, c := range s {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && (quoted || depth > 0):
			escaped = true
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
			continue
		case c == ')' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(' ')
			}
			continue
		}
		if depth == 0 {
			b.WriteRune(c)
		}
	}
	return b.String()
}
