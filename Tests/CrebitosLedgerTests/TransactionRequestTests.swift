import CrebitosLedger
import XCTest

final class TransactionRequestTests: XCTestCase {
    func testAcceptsTheChallengesExamples() throws {
        let request = try TransactionRequest(amount: 1000, kind: .credit, description: "descricao")
        XCTAssertEqual(request.amount, 1000)
        XCTAssertEqual(request.balanceDelta, 1000)
        XCTAssertEqual(try TransactionRequest(amount: 1, kind: .debit, description: "x").balanceDelta, -1)
    }

    func testAmountMustBePositiveAndBounded() {
        XCTAssertThrowsError(try TransactionRequest(amount: 0, kind: .credit, description: "x")) {
            XCTAssertEqual($0 as? TransactionValidationError, .amountNotPositive)
        }
        XCTAssertThrowsError(try TransactionRequest(amount: -5, kind: .debit, description: "x")) {
            XCTAssertEqual($0 as? TransactionValidationError, .amountNotPositive)
        }
        XCTAssertNoThrow(try TransactionRequest(amount: TransactionRequest.maximumAmount, kind: .credit, description: "x"))
        XCTAssertThrowsError(try TransactionRequest(amount: TransactionRequest.maximumAmount + 1, kind: .credit, description: "x")) {
            XCTAssertEqual($0 as? TransactionValidationError, .amountTooLarge)
        }
    }

    func testDescriptionLengthCountsCharactersNotBytes() throws {
        XCTAssertNoThrow(try TransactionRequest(amount: 1, kind: .debit, description: "ação"))
        // 10 characters, 20 bytes in UTF-8.
        XCTAssertNoThrow(try TransactionRequest(amount: 1, kind: .debit, description: "áéíóúãõçâê"))
        XCTAssertNoThrow(try TransactionRequest(amount: 1, kind: .debit, description: "0123456789"))
        XCTAssertThrowsError(try TransactionRequest(amount: 1, kind: .debit, description: "01234567890")) {
            XCTAssertEqual($0 as? TransactionValidationError, .descriptionTooLong)
        }
        XCTAssertThrowsError(try TransactionRequest(amount: 1, kind: .debit, description: "")) {
            XCTAssertEqual($0 as? TransactionValidationError, .descriptionEmpty)
        }
        // 25 characters: the challenge's own invalid example.
        XCTAssertThrowsError(try TransactionRequest(amount: 1, kind: .debit, description: String(repeating: "a", count: 25)))
    }

    func testDescriptionCountsUnicodeScalarsLikeSQLite() {
        // "é" written as "e" + combining acute accent is 2 scalars, as SQLite's length() counts it.
        let decomposed = String(repeating: "e\u{301}", count: 5)
        XCTAssertEqual(decomposed.unicodeScalars.count, 10)
        XCTAssertNoThrow(try TransactionRequest(amount: 1, kind: .debit, description: decomposed))
        XCTAssertThrowsError(try TransactionRequest(amount: 1, kind: .debit, description: decomposed + "e\u{301}"))
    }

    func testDescriptionRefusesControlCharacters() {
        for text in ["a\u{0}b", "line\nbreak", "tab\t", "\u{7F}", "\u{85}"] {
            XCTAssertThrowsError(try TransactionRequest(amount: 1, kind: .debit, description: text), text.debugDescription) {
                XCTAssertEqual($0 as? TransactionValidationError, .descriptionHasControlCharacters)
            }
        }
        XCTAssertNoThrow(try TransactionRequest(amount: 1, kind: .debit, description: "🙂 emoji"))
    }

    func testIdempotencyKeySyntax() {
        XCTAssertNotNil(IdempotencyKey("3f1c9e0a-1b2c-4d5e-8f90-0123456789ab"))
        XCTAssertNil(IdempotencyKey(""))
        XCTAssertNil(IdempotencyKey("has space"))
        XCTAssertNil(IdempotencyKey("ção"))
        XCTAssertNil(IdempotencyKey(String(repeating: "k", count: 129)))
        XCTAssertNotNil(IdempotencyKey(String(repeating: "k", count: 128)))
    }

    func testEveryValidationErrorNamesItsField() {
        let errors: [TransactionValidationError] = [
            .amountMissing, .amountNotAnInteger, .amountNotPositive, .amountTooLarge, .kindMissing, .kindInvalid,
            .descriptionMissing, .descriptionNotAString, .descriptionEmpty, .descriptionTooLong,
            .descriptionHasControlCharacters,
        ]
        for error in errors {
            XCTAssertTrue(["valor", "tipo", "descricao"].contains(error.field))
            XCTAssertTrue(error.message.hasPrefix(error.field), error.message)
        }
    }
}
