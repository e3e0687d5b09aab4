package main

import "io"

func cmdWrap(args []string, stdout, stderr io.Writer) int { return exitError }
