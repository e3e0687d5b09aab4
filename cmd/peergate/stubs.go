package main

import "io"

func serve(args []string, stdout, stderr io.Writer) int { return exitError }
func wrap(args []string, stdout, stderr io.Writer) int  { return exitError }
