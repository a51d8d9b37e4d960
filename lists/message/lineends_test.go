package message

import "testing"

func TestCleanLineEnds(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"", true},
		{"a\r\nb\r\n", true},
		{"a\r\n\r\nb", true},
		{"a\nb", false},
		{"a\rb", false},
		{"a\r", false},
		{"\nb", false},
		{"a\r\r\n", false},
		{"a\r\n\n", false},
	} {
		if got := CleanLineEnds([]byte(tt.in)); got != tt.want {
			t.Errorf("CleanLineEnds(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
