package smtpd

import (
	"errors"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Address errors say why an address was refused. They go to the log only: the client
// gets errNoSuchRecipient or errBadSender whatever the reason.
var (
	errAddrLength  = errors.New("smtpd: address too long")
	errAddrAt      = errors.New("smtpd: address must contain exactly one @")
	errAddrLocal   = errors.New("smtpd: local part is not a dot-atom")
	errAddrDomain  = errors.New("smtpd: domain is not a host name")
	errAddrLiteral = errors.New("smtpd: bad address literal")
)

// Length limits of RFC 5321 §4.5.3.1: local part 64 octets (§4.5.3.1.1), path 256
// octets including the angle brackets (§4.5.3.1.3), so 254 for the address, domain 255
// (§4.5.3.1.2), and a label 63 (RFC 1035 §2.3.4).
const (
	maxLocalLen   = 64
	maxAddressLen = 254
	maxLabelLen   = 63
)

// parseRecipient re-parses a RCPT address strictly (docs/threat-model.md B3). go-smtp's parsePath
// has already stripped any source route (RFC 5321 §3.6.1 lets us ignore it) and
// unquoted the local part, so <"a@evil"@ex.org> arrives as a@evil@ex.org. Accepted is
// only dot-atom@domain:
//
//   - exactly one '@', so an unquoted quoted local part cannot hide a second address;
//   - a dot-atom local part of RFC 5322 §3.2.3 atext, ASCII only, without '%' and '!'
//     (the percent hack and bang paths route through the receiving host);
//   - an LDH domain of at least two labels, no trailing dot, no address literal, not
//     all-numeric at the top (RFC 3696 §2), ASCII only (no homographs).
//
// It returns the local part as given and the domain lower-cased, since domains are
// case-insensitive and local parts are not (RFC 5321 §2.4).
func parseRecipient(addr string) (string, error) {
	local, domain, err := splitAddress(addr)
	if err != nil {
		return "", err
	}
	if !isDotAtom(local, recipientAtext) {
		return "", errAddrLocal
	}
	if !isHostname(domain, false) {
		return "", errAddrDomain
	}
	return local + "@" + strings.ToLower(domain), nil
}

// parseSender checks a MAIL FROM address. "" (the null sender <>) is valid (RFC 5321
// §4.5.5). It is less strict than parseRecipient, because replies may go back to it and
// ordinary senders use characters we refuse as recipients, but it still demands an
// address that can be written back without quoting: a dot-atom of full atext (UTF-8
// allowed with SMTPUTF8, RFC 6531 §3.3) at a host name or an address literal (RFC 5321
// §4.1.3). A quoted local part arrives unquoted from go-smtp and is refused.
func parseSender(addr string, smtputf8 bool) (string, error) {
	if addr == "" {
		return "", nil
	}
	if !smtputf8 && !isASCII(addr) || !utf8.ValidString(addr) {
		return "", errAddrLocal
	}
	local, domain, err := splitAddress(addr)
	if err != nil {
		return "", err
	}
	if !isDotAtom(local, senderAtext) {
		return "", errAddrLocal
	}
	if strings.HasPrefix(domain, "[") {
		if !isAddressLiteral(domain) {
			return "", errAddrLiteral
		}
		return addr, nil
	}
	if !isHostname(domain, smtputf8) {
		return "", errAddrDomain
	}
	return local + "@" + strings.ToLower(domain), nil
}

func splitAddress(addr string) (local, domain string, err error) {
	if len(addr) > maxAddressLen {
		return "", "", errAddrLength
	}
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || strings.Contains(domain, "@") {
		return "", "", errAddrAt
	}
	if local == "" || len(local) > maxLocalLen {
		return "", "", errAddrLocal
	}
	return local, domain, nil
}

// recipientAtext is RFC 5322 §3.2.3 atext without '%' and '!'.
func recipientAtext(c rune) bool {
	return isAlnum(c) || strings.ContainsRune("#$&'*+-/=?^_`{|}~", c)
}

// senderAtext is RFC 5322 §3.2.3 atext, extended by RFC 6531 §3.3 with UTF-8 (which
// parseSender admits only with SMTPUTF8).
func senderAtext(c rune) bool {
	return isAlnum(c) || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c) ||
		c > 0x7f && c != utf8.RuneError && unicode.IsGraphic(c) && !unicode.IsSpace(c)
}

// isDotAtom reports whether s is 1*atext *("." 1*atext) (RFC 5322 §3.2.3).
func isDotAtom(s string, atext func(rune) bool) bool {
	if s == "" {
		return false
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for _, c := range atom {
			if !atext(c) {
				return false
			}
		}
	}
	return true
}

// isHostname reports whether d is an LDH domain (RFC 5321 §4.1.2 Domain, RFC 1035
// labels) with at least two labels and no trailing dot. With unicodeLabels, labels may
// also hold non-ASCII letters (RFC 6531 §3.3 U-labels; no IDNA validation is attempted).
func isHostname(d string, unicodeLabels bool) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !isAlnum(c) && c != '-' && !(unicodeLabels && isULabelRune(c)) {
				return false
			}
		}
	}
	// RFC 3696 §2: a top-level domain is never all-numeric, so 192.0.2.1 is no host name.
	tld := labels[len(labels)-1]
	return strings.Trim(tld, "0123456789") != ""
}

// isULabelRune admits the letters, digits and marks of U-labels, but no controls,
// bidi overrides or spaces.
func isULabelRune(c rune) bool {
	return c > 0x7f && c != utf8.RuneError && (unicode.IsLetter(c) || unicode.IsDigit(c) || unicode.IsMark(c))
}

// isAddressLiteral accepts [IPv4] and [IPv6:addr] (RFC 5321 §4.1.3).
func isAddressLiteral(d string) bool {
	if len(d) < 3 || d[0] != '[' || d[len(d)-1] != ']' {
		return false
	}
	inner := d[1 : len(d)-1]
	if v6, ok := strings.CutPrefix(inner, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(inner)
	return err == nil && a.Is4()
}

func isAlnum(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}
