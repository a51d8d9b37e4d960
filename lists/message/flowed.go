package message

import "strings"

// DecodeFlowed undoes format=flowed (RFC 3676) on text, which is already
// transfer- and charset-decoded with LF line ends: soft line breaks are
// joined so a paragraph that a mail client wrapped at 72 columns comes back
// as one line. delSp is the DelSp parameter ("yes": the space before a soft
// break was inserted by the sender and is removed when joining, §4.2).
//
// The rules of RFC 3676:
//   - A line's quote depth is the number of ">" it starts with (§4.5); the
//     marks are kept on output, as one run of ">" followed by a space.
//   - After the quote marks, one leading space is space-stuffing and is
//     removed (§4.4): " >x" is the unquoted text ">x", " From" is "From".
//   - A line that ends in a space is flowed: it continues on the next line
//     (§4.2), unless it is the signature separator "-- " (§4.3, always a
//     line of its own, even after a flowed line), the next
//     line has another quote depth (§4.5: the flow stops there), or it is
//     the last line.
//   - With DelSp=yes the one trailing space of a flowed line is deleted
//     before joining; with DelSp=no (the default) it stays (§4.2).
//
// Lines that end without a space are fixed and come out unchanged (apart
// from the stuffing space), so plain text that was never flowed survives.
func DecodeFlowed(text string, delSp bool) string {
	trailingLF := strings.HasSuffix(text, "\n")
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	var b strings.Builder
	b.Grow(len(text))
	var para strings.Builder // the logical line being joined
	paraDepth, open := 0, false
	flush := func() {
		if !open {
			return
		}
		if paraDepth > 0 {
			b.WriteString(strings.Repeat(">", paraDepth))
			if para.Len() > 0 {
				b.WriteByte(' ')
			}
		}
		b.WriteString(para.String())
		b.WriteByte('\n')
		para.Reset()
		open = false
	}
	for _, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		depth := 0
		for depth < len(line) && line[depth] == '>' {
			depth++
		}
		content := line[depth:]
		content = strings.TrimPrefix(content, " ") // §4.4 space-stuffing
		sigSep := content == "-- "
		if open && (depth != paraDepth || sigSep) {
			// §4.5: a flowed line before a change of depth ends its
			// paragraph; §4.3: the signature separator is a line of its own.
			flush()
		}
		if !open {
			paraDepth, open = depth, true
		}
		flowed := strings.HasSuffix(content, " ") && !sigSep
		if flowed && delSp {
			content = content[:len(content)-1]
		}
		para.WriteString(content)
		if !flowed {
			flush()
		}
	}
	flush()
	out := b.String()
	if !trailingLF {
		out = strings.TrimSuffix(out, "\n")
	}
	return out
}
