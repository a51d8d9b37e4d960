package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/embargo-project/embargo/workflow"
)

// cmdCVSS implements `embargo cvss [VECTOR…]`: for each vector (the arguments,
// or one per line on stdin when there are none; blank lines and # comments
// skipped) it prints "VECTOR<TAB>SCORE<TAB>SEVERITY", the score with one
// decimal and the severity None, Low, Medium, High or Critical (FIRST). A bad
// vector gets a line on stderr naming the bad metric; after every line is
// processed, the function returns an error if any vector was bad.
func cmdCVSS(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	bad := 0
	score := func(v string) {
		line, err := workflow.ScoreLine(v)
		if err != nil {
			bad++
			fmt.Fprintln(stderr, "embargo cvss:", err)
			return
		}
		fmt.Fprintln(stdout, line)
	}
	if len(args) > 0 {
		for _, v := range args {
			score(v)
		}
	} else {
		s := bufio.NewScanner(stdin)
		for s.Scan() {
			if v := strings.TrimSpace(s.Text()); v != "" && !strings.HasPrefix(v, "#") {
				score(v)
			}
		}
		if err := s.Err(); err != nil {
			return fmt.Errorf("cvss: read standard input: %w", err)
		}
	}
	if bad > 0 {
		return fmt.Errorf("cvss: %d bad vector(s)", bad)
	}
	return nil
}
