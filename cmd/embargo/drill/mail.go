package drill

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"mime/quotedprintable"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/keys"
)

var placeholder = regexp.MustCompile(`\{(id|thread|src|date:\+)([0-9]*[wdhm]?[0-9wdhm]*)\}|\{(security|domain)\}`)

// expand replaces the placeholders of the README: {id}, {idN}, {thread},
// {threadN}, {srcN}, {security}, {domain}, {date:+Nd}; s empty means def.
func (dr *drill) expand(s, def string) string {
	if s == "" {
		s = def
	}
	return placeholder.ReplaceAllStringFunc(s, func(p string) string {
		m := placeholder.FindStringSubmatch(p)
		switch {
		case m[3] == "security":
			return dr.securityList().Address
		case m[3] == "domain":
			return dr.cfg.Domain
		case m[1] == "date:+":
			t, _, err := parseWhen([]string{"+" + m[2]}, dr.sc.start)
			if err != nil {
				return p
			}
			return t.Format(time.DateOnly)
		case m[1] == "src":
			n, err := strconv.Atoi(m[2])
			if err != nil || n < 1 || n > len(dr.src) {
				return p
			}
			return dr.src[n-1]
		}
		// id, thread: the latest incident, or the N-th.
		if len(dr.ids) == 0 {
			return p
		}
		id := dr.ids[len(dr.ids)-1]
		if m[2] != "" {
			n, err := strconv.Atoi(m[2])
			if err != nil || n < 1 || n > len(dr.ids) {
				return p
			}
			id = dr.ids[n-1]
		}
		if m[1] == "thread" {
			return dr.securityList().SubAddress(string(id))
		}
		return string(id)
	})
}

// member resolves who signs: an address, a local part, or srcN.
func (dr *drill) member(who string) (string, *keys.Key, error) {
	who = strings.ToLower(dr.expand(who, ""))
	if strings.HasPrefix(who, "src") {
		if n, err := strconv.Atoi(who[3:]); err == nil && n >= 1 && n <= len(dr.src) {
			who = dr.src[n-1]
		}
	}
	for _, m := range dr.cfg.Members {
		local, _, _ := strings.Cut(m.Email, "@")
		if m.Email == who || local == who {
			return m.Email, dr.members[m.Email], nil
		}
	}
	return "", nil, fmt.Errorf("%q is no member of the configuration (use an address, a local part, or src1, src2, …)", who)
}

// signed builds a PGP/MIME signed message from a member, at the virtual time.
func (dr *drill) signed(from, to, text string, k *keys.Key) ([]byte, error) {
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	io.WriteString(w, strings.ReplaceAll(text, "\n", "\r\n"))
	w.Close()
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp.String()
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	subject := "Commands"
	if id := dr.incidentFor(to); id != "" {
		subject = "Re: [" + string(id) + "] commands"
	}
	h.SetSubject(subject)
	h.SetDate(dr.clk.Now())
	mid, err := randomID()
	if err != nil {
		return nil, err
	}
	h.SetMessageID("drill." + mid + "@" + dr.cfg.Domain)
	return keys.Sign(h, []byte(inner), k, keys.Options{Now: dr.clk.Now})
}

func randomID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
