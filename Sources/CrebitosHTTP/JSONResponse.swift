import Hummingbird

enum JSONResponse {
    static let headers: HTTPFields = [.contentType: "application/json"]

    static func ok(_ json: JSONWriter, headers: HTTPFields = JSONResponse.headers) -> Response {
        Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: json.buffer))
    }
}
