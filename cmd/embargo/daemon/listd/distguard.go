package listd

import (
	"fmt"
	"strings"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/lists"
)

// recipientFields are the header fields that name recipients (RFC 5322
// §3.6.3, and §3.6.6 for the resent ones). A post to distributors@ may name
// only the list and the SRC in any of them (docs/threat-model.md G1): our
// copies are rebuilt and name nobody, but an outside address there means
// the post went, or will go, outside.
var recipientFields = []string{"To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"}

// headerProblem is why the recipient fields of a post to distributors@
// refuse it: the reply for the sender and the reason for the SRC's alert.
type headerProblem struct {
	reply, alert string
}

// checkRecipientFields checks every occurrence of every recipient field
// (a second Cc is as good a way out as the first). A field that cannot be
// parsed, or is too long to parse safely (docs/threat-model.md C4), is
// refused like an outside address: what we cannot read, we cannot clear.
// nil means every named address is the list or a committee member.
func (s *Service) checkRecipientFields(h mail.Header) *headerProblem {
	dl := s.o.Roster.List(lists.Distributors)
	limit := s.o.Limits.MaxAddrHeader
	if limit == 0 {
		limit = 4 << 10 // lists/message's default for From
	}
	for _, field := range recipientFields {
		for _, v := range h.Values(field) {
			if strings.TrimSpace(v) == "" {
				continue // an empty field names nobody
			}
			if len(v) > limit {
				return &headerProblem{
					reply: fmt.Sprintf("The %s header of this post is longer than %d bytes and is not read; name only the list and the Security Response Committee and send it again", field, limit),
					alert: "a post with a " + field + " header too long to check was refused (possible attempt to hide an outside address); it reached nobody",
				}
			}
			// go-message decodes RFC 2047 words in display names only: an
			// address is never taken from an encoded word. Groups count by
			// their members ("undisclosed-recipients:;" names nobody).
			addrs, err := mail.ParseAddressList(v)
			if err != nil {
				return &headerProblem{
					reply: "The " + field + " header of this post cannot be parsed (RFC 5322 section 3.4); write each address as name@domain, separated by commas, and send it again. The Security Response Committee has been alerted",
					alert: "a post whose " + field + " header cannot be parsed was refused (an unreadable address may be an outside one); it reached nobody",
				}
			}
			for _, a := range addrs {
				addr := strings.ToLower(a.Address)
				if addr == strings.ToLower(dl.Address) || s.o.Roster.IsCommittee(addr) {
					continue
				}
				return &headerProblem{
					reply: "This post names an address outside the embargo list in " + field + "; remove every outside address and send it again. The Security Response Committee has been alerted",
					alert: "a post named an address outside the list in " + field + " (possible embargo breach); it was refused and reached nobody",
				}
			}
		}
	}
	return nil
}
