package aigate.crown_jewel

deny if {
    input.request.action == "upload_file"
    input.device.crown_jewel == true
}

reason := "Files may not be uploaded to AI services from a crown-jewel device."
