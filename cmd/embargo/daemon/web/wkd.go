package web

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// The OpenPGP Web Key Directory, draft-koch-openpgp-webkey-service §3.1:
//
//	direct:   https://example.org/.well-known/openpgpkey/hu/<hash>?l=<local>
//	advanced: https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/<hash>?l=<local>
//
// <hash> is the z-base-32 encoding of the SHA-1 of the local part mapped to
// lower case (ASCII only). The key is served binary, unarmored, as
// application/octet-stream. A policy file (§4.5) marks the directory as
// present; ours is empty: no submission, no further flags.

// zbase32Alphabet is z-base-32 (draft §3.1, after Zooko's
// http://philzimmermann.com/docs/human-oriented-base-32-encoding.txt).
const zbase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

// ZBase32 encodes b, most significant bit first, five bits per character; a
// last partial group is padded with zero bits. No padding characters.
func ZBase32(b []byte) string {
	var out strings.Builder
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out.WriteByte(zbase32Alphabet[(acc>>uint(bits))&31])
		}
	}
	if bits > 0 {
		out.WriteByte(zbase32Alphabet[(acc<<uint(5-bits))&31])
	}
	return out.String()
}

// asciiLower maps A–Z to a–z and leaves every other byte alone, as the
// draft asks ("only ASCII characters are mapped to lowercase").
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// WKDHash returns the hashed user part of a WKD URL for an address:
// z-base-32(SHA-1(lower-case local part)). "Joe.Doe@Example.ORG" gives
// "iy9q119eutrkn8s1mk4r39qejnbu3n5q" (draft §3.1).
func WKDHash(address string) string {
	local := address
	if i := strings.LastIndexByte(address, '@'); i >= 0 {
		local = address[:i]
	}
	sum := sha1.Sum([]byte(asciiLower(local)))
	return ZBase32(sum[:])
}

// wkdKey is one served key.
type wkdKey struct {
	domain string // lower case
	local  string // as configured
	data   []byte // binary transferable public key
}

// keyIndex finds keys by hash.
type keyIndex struct {
	byHash  map[string][]wkdKey
	domains map[string]bool
}

func newKeyIndex(keys map[string][]byte, log *slog.Logger) *keyIndex {
	ix := &keyIndex{byHash: map[string][]wkdKey{}, domains: map[string]bool{}}
	for _, addr := range sortedKeys(keys) {
		local, domain, ok := strings.Cut(addr, "@")
		if !ok || local == "" || domain == "" {
			log.Error("wkd: not an address; key left out", "address", addr)
			continue
		}
		data, err := Dearmor(keys[addr])
		if err != nil {
			log.Error("wkd: key does not decode; left out", "address", addr, "err", err)
			continue
		}
		domain = asciiLower(domain)
		h := WKDHash(addr)
		ix.byHash[h] = append(ix.byHash[h], wkdKey{domain: domain, local: local, data: data})
		ix.domains[domain] = true
	}
	return ix
}

// lookup returns the key for hash in domain; domain "" (direct method) takes
// the key whose domain is the request's host, or the only one.
func (ix *keyIndex) lookup(hash, domain, host string) (wkdKey, bool) {
	cands := ix.byHash[hash]
	if domain != "" {
		for _, k := range cands {
			if k.domain == domain {
				return k, true
			}
		}
		return wkdKey{}, false
	}
	if len(cands) == 1 {
		return cands[0], true
	}
	for _, k := range cands {
		if k.domain == host || "openpgpkey."+k.domain == host {
			return k, true
		}
	}
	return wkdKey{}, false
}

// wkd serves /.well-known/openpgpkey/…: hu/<hash>, policy, and the same
// under <domain>/ for the advanced method.
func (s *Server) wkd(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/.well-known/openpgpkey/")
	parts := strings.Split(rest, "/")
	domain := ""
	if (len(parts) >= 2 && parts[0] != "hu") || len(parts) == 3 {
		domain = asciiLower(parts[0])
		if !s.keys.domains[domain] {
			notFound(w)
			return
		}
		parts = parts[1:]
	}
	// draft §3.1: clients may fetch across origins.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	switch {
	case len(parts) == 1 && parts[0] == "policy":
		text(w, http.StatusOK, "")
	case len(parts) == 2 && parts[0] == "hu" && len(parts[1]) == 32:
		host := asciiLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		k, ok := s.keys.lookup(parts[1], domain, host)
		if !ok {
			notFound(w)
			return
		}
		// The l parameter, when given, must name the same local part.
		if l := r.URL.Query().Get("l"); l != "" && WKDHash(l) != parts[1] {
			notFound(w)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(k.data)))
		_, _ = w.Write(k.data)
	default:
		notFound(w)
	}
}

// Errors of Dearmor.
var (
	ErrArmor    = errors.New("web: not an OpenPGP armored public key block")
	ErrChecksum = errors.New("web: armor checksum mismatch")
)

// Dearmor returns the binary packets of an OpenPGP key: binary input is
// returned as is; an ASCII-armored public key block (RFC 9580 §6.2) is
// decoded and its CRC-24, when present, checked.
func Dearmor(in []byte) ([]byte, error) {
	if len(in) > 0 && in[0]&0x80 != 0 {
		return bytes.Clone(in), nil // a packet tag byte: binary already
	}
	text := strings.ReplaceAll(string(in), "\r\n", "\n")
	const begin, end = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
	i := strings.Index(text, begin)
	if i < 0 {
		return nil, ErrArmor
	}
	lines := strings.Split(text[i+len(begin):], "\n")
	rest := lines[1:]
	// Armor headers ("Key: value") up to the blank line that ends them.
	j := 0
	for j < len(rest) && strings.TrimSpace(rest[j]) != "" && strings.Contains(rest[j], ": ") {
		j++
	}
	if j < len(rest) && strings.TrimSpace(rest[j]) == "" {
		j++
	}
	var body strings.Builder
	var crc string
	ended := false
	for _, l := range rest[j:] {
		l = strings.TrimSpace(l)
		if l == end {
			ended = true
			break
		}
		if strings.HasPrefix(l, "=") && len(l) == 5 {
			crc = l[1:]
			continue
		}
		body.WriteString(l)
	}
	if !ended {
		return nil, ErrArmor
	}
	data, err := base64.StdEncoding.DecodeString(body.String())
	if err != nil || len(data) == 0 {
		return nil, fmt.Errorf("%w: %v", ErrArmor, err)
	}
	if crc != "" {
		want, err := base64.StdEncoding.DecodeString(crc)
		if err != nil || len(want) != 3 {
			return nil, ErrChecksum
		}
		got := crc24(data)
		if byte(got>>16) != want[0] || byte(got>>8) != want[1] || byte(got) != want[2] {
			return nil, ErrChecksum
		}
	}
	return data, nil
}

// crc24 is the armor checksum (RFC 9580 §6.1).
func crc24(data []byte) uint32 {
	const init, poly = 0xB704CE, 0x1864CFB
	crc := uint32(init)
	for _, b := range data {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= poly
			}
		}
	}
	return crc & 0xFFFFFF
}
