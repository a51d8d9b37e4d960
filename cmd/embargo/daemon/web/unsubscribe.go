package web

import (
	"bytes"
	"context"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// ErrUnknownToken may be returned by Options.Unsubscribe for a token that
// names no subscription. It is answered exactly like a success: the endpoint
// never reveals whether a token exists.
var ErrUnknownToken = errors.New("web: unknown unsubscribe token")

// maxToken bounds a token; longer ones cannot be ours.
const maxToken = 256

// validToken: URL-safe characters only (base64url, hex, or a dotted form).
func validToken(t string) bool {
	if t == "" || len(t) > maxToken {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~', c == '=':
		default:
			return false
		}
	}
	return true
}

var unsubscribeTmpl = template.Must(template.New("unsubscribe").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}}</title><style>` + css + `</style></head>
<body><main>
<h1>{{.Title}}</h1>
{{if .Confirm -}}
<p>Press the button to stop receiving mail from this list at this address.</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>
{{- else -}}
<p>{{.Message}}</p>
{{- end}}
</main></body></html>
`))

type unsubscribePageData struct {
	Title, Message string
	Confirm        bool
}

func (s *Server) unsubscribeHTML(w http.ResponseWriter, code int, d unsubscribePageData) {
	var b bytes.Buffer
	if err := unsubscribeTmpl.Execute(&b, d); err != nil {
		s.log.Error("unsubscribe page", "err", err)
		text(w, http.StatusInternalServerError, "internal error\n")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// unsubscribePage answers GET: a page with a confirm button, the same for
// every token. It never unsubscribes: mail scanners and previews fetch links
// (RFC 8058 §1). The form posts back to the same URL.
func (s *Server) unsubscribePage(w http.ResponseWriter, r *http.Request) {
	s.unsubscribeHTML(w, http.StatusOK, unsubscribePageData{Title: "Unsubscribe", Confirm: true})
}

// unsubscribe answers the RFC 8058 one-click POST: a body (form-urlencoded or
// multipart/form-data, §3.1) holding List-Unsubscribe=One-Click. Known,
// unknown and malformed tokens get the same answer after the same minimum
// time; only a failure of the store differs (503), which does not depend on
// the token's existence.
func (s *Server) unsubscribe(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code, page := s.unsubscribeResult(w, r)
	s.pad(r.Context(), start) // before anything is written
	s.unsubscribeHTML(w, code, page)
}

func (s *Server) unsubscribeResult(w http.ResponseWriter, r *http.Request) (int, unsubscribePageData) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	var err error
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		err = r.ParseMultipartForm(4 << 10)
	} else {
		err = r.ParseForm()
	}
	if err != nil || r.PostForm.Get("List-Unsubscribe") != "One-Click" {
		return http.StatusBadRequest, unsubscribePageData{Title: "Unsubscribe",
			Message: "This request does not say List-Unsubscribe=One-Click. Open the link in a browser and press the button."}
	}
	token := r.PathValue("token")
	err = ErrUnknownToken
	if validToken(token) {
		if s.o.Unsubscribe == nil {
			err = errUnavailable
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), funcTimeout)
			err = s.o.Unsubscribe(ctx, token)
			cancel()
		}
	}
	if err != nil && !errors.Is(err, ErrUnknownToken) {
		s.log.Warn("unsubscribe failed", "err", err) // never the token
		return http.StatusServiceUnavailable, unsubscribePageData{Title: "Unsubscribe",
			Message: "Unsubscribing is not possible right now. Please try again later."}
	}
	return http.StatusOK, unsubscribePageData{Title: "Unsubscribed",
		Message: "If this link belonged to a subscription, that address will receive no more mail from the list."}
}

// pad waits until start plus the minimum duration, so that the time taken
// says nothing about the token.
func (s *Server) pad(ctx context.Context, start time.Time) {
	left := s.o.UnsubscribeMinDuration - time.Since(start)
	if left <= 0 {
		return
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
