// goget: an HTTP client in Go, for the kernel guard's tests. Go makes its own system calls
// (connect, its DNS resolver's UDP queries), so LD_PRELOAD never sees them.
//
//	goget URL          prints the body
//	goget -race FAST SLOW
//	                   fetches both at once; prints "fast: N ms" when FAST is done and
//	                   "slow: done" or "slow: error ..." when SLOW ends
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func get(url string) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "-race" {
		start := time.Now()
		slow := make(chan error, 1)
		go func() { _, err := get(os.Args[3]); slow <- err }()
		time.Sleep(50 * time.Millisecond) // the slow one is under way first
		if _, err := get(os.Args[2]); err != nil {
			fmt.Println("fast: error", err)
			os.Exit(1)
		}
		fmt.Printf("fast: %d ms\n", time.Since(start).Milliseconds()-50)
		if err := <-slow; err != nil {
			fmt.Println("slow: error", err)
		} else {
			fmt.Println("slow: done")
		}
		return
	}
	body, err := get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Print(body)
}
