package main

func registryCommands() []command { return nil }
